"""The part of a CUDA graph's capture that runs anywhere: the warm-up steps before it are
undone exactly, so that the graphed attempt trains the steps an eager one trains, and a
capture that fails leaves the run training eagerly to the same bits. (The capture and its
replays: tests/pipeline/training/test_cuda.py, where CUDA is.)"""

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig
from pipeline.training import graphs
from pipeline.training.attempt import Attempt
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.graphs import WARMUP_STEPS, _Saved
from pipeline.training.hardware import Hardware
from pipeline.training.models import build_model
from pipeline.training.tensors import to_model_input
from pipeline.training.train import fit


def adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


def step(model, optimizer, x):
    loss = F.mse_loss(model(x), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def numbers(result):
    return [(r.train_mse, r.test_mse, r.train_eval_mse) for r in result.history]


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


@pytest.fixture(scope="module")
def small(mnist_dir):
    return Mnist().load(mnist_dir, train_limit=1024, test_limit=256, log=lambda _: None)


def fails(*args, **kwargs):
    raise RuntimeError("operation not permitted when stream is capturing")


def fail_at_capture(monkeypatch) -> None:
    """The warm-up runs for real (on the CPU, with no stream to switch to); the capture
    itself raises, as a CUDA capture that meets an illegal call does."""
    monkeypatch.setattr(graphs, "side_stream", lambda device: None)
    monkeypatch.setattr(graphs, "on_stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(graphs, "capture", fails)


@pytest.mark.parametrize("where", ["at once", "after the warm-up"])
def test_a_capture_that_fails_trains_eagerly_to_the_same_bits_and_records_no_replay(
    small, monkeypatch, where
):
    """A Hardware asking for graphs on the CPU: the capture fails at once (a CUDA graph
    holds only CUDA work), or after the warm-up's real steps. Either way the run warns,
    trains every step eagerly from the weights and Adam state as they were, and ends
    exactly as a run that never asked for graphs."""
    if where == "after the warm-up":
        fail_at_capture(monkeypatch)
    cfg = TrainConfig(epochs=2, batch_size=64, device="cpu", precision="fp32")
    eager = fit(lambda: build_model("conv", 10), small, cfg, log=lambda _: None)
    asked = Hardware(torch.device("cpu"), "fp32", cuda_graphs=True)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed at step 0 of seed 0"):
        fell_back = fit(
            lambda: build_model("conv", 10), small, cfg, log=lambda _: None, hardware=asked
        )
    assert numbers(fell_back) == numbers(eager)
    assert fell_back.final_train_mse == eager.final_train_mse
    weights = (r.model.state_dict().values() for r in (fell_back, eager))
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    assert fell_back.graph_replays == eager.graph_replays == 0


def test_a_failed_capture_is_not_tried_again_within_its_attempt(small, monkeypatch):
    fail_at_capture(monkeypatch)
    cfg = TrainConfig(batch_size=64, device="cpu", precision="fp32")
    hw = Hardware(torch.device("cpu"), "fp32", cuda_graphs=True)
    att = Attempt(lambda: build_model("conv", 3), 0, cfg, hw, None)
    x = to_model_input(small.train.images[:128], hw.device)
    with pytest.warns(RuntimeWarning) as caught:
        for batch in x.split(64):
            att.train_step(batch)
    assert len(caught) == 1 and att.capture_failed and att.graphed is None
    assert att.step == 2 and att.graph_replays == 0
