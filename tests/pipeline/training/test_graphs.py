"""The part of a CUDA graph's capture that runs anywhere: the warm-up steps before it are
undone exactly, so that the graphed attempt trains the steps an eager one trains. (The
capture and its replays: tests/pipeline/training/test_cuda.py, where CUDA is.)"""

import copy

import pytest
import torch
import torch.nn.functional as F

from pipeline.training.graphs import WARMUP_STEPS, _Saved
from pipeline.training.models import build_model


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


def step(model, optimizer, x):
    loss = F.mse_loss(model(x), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def same(a, b, opt_a, opt_b) -> bool:
    weights = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    states = zip(*(o.state_dict()["state"].values() for o in (opt_a, opt_b)), strict=True)
    return all(torch.equal(p, q) for p, q in weights) and all(
        s.keys() == t.keys() and all(torch.equal(s[k], t[k]) for k in s) for s, t in states
    )


@pytest.mark.parametrize("trained_before", [0, 2])  # a fresh attempt, and a resumed one
def test_the_warm_up_before_a_capture_leaves_no_trace(trained_before):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    model = build_model("conv", 3)
    twin = copy.deepcopy(model)
    opt, twin_opt = adam(model), adam(twin)
    for _ in range(trained_before):
        step(model, opt, x)
        step(twin, twin_opt, x)
    saved = _Saved(model, opt)
    for _ in range(WARMUP_STEPS):
        step(model, opt, torch.rand_like(x))
    assert not same(model, twin, opt, twin_opt)
    saved.restore()
    # Adam's state is back (at zeros where it had none): the next steps are the twin's.
    for _ in range(3):
        step(model, opt, x)
        step(twin, twin_opt, x)
    assert same(model, twin, opt, twin_opt)
