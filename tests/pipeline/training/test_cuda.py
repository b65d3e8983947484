"""Training on a CUDA device: both precisions, the step as a CUDA graph, reproducible runs.
Skipped, with the reason, where there is no CUDA device (CI, the CPU machines)."""

import copy
from dataclasses import replace

import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import FORWARD_PRECISIONS, bf16_supported, resolve_hardware
from pipeline.training.health import HEALTH_WINDOW
from pipeline.training.models import build_model
from pipeline.training.train import fit

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: torch.cuda.is_available() is False here",
)
# 2048 training images in batches of 96: 21 full batches and a last one of 32 an epoch.
CFG = TrainConfig(epochs=3, batch_size=96, device="cuda", precision="fp32")
STEPS_AN_EPOCH = 22
WINDOW = min(HEALTH_WINDOW, CFG.epochs * STEPS_AN_EPOCH)  # the health window: all 3 epochs


class Stop(Exception):
    """What a stop request raises in a step (tracking's is KeyboardInterrupt or Terminated)."""


@pytest.fixture(scope="module")
def small(mnist_dir):
    return Mnist().load(mnist_dir, train_limit=2048, test_limit=512, log=lambda _: None)


def train(data, cfg=CFG, **kw):
    return fit(lambda: build_model("conv", 10), data, cfg, log=lambda _: None, **kw)


def numbers(result):
    return [(r.train_mse, r.test_mse, r.train_eval_mse) for r in result.history]


@pytest.mark.parametrize("precision", FORWARD_PRECISIONS)
def test_training_on_cuda_learns_with_the_model_and_data_on_the_device(small, precision):
    if precision == "bf16" and not bf16_supported(torch.device("cuda")):
        pytest.skip("torch.cuda.is_bf16_supported() is False for this GPU")
    devices = []
    result = train(
        small,
        replace(CFG, precision=precision),
        on_epoch_end=lambda r, model: devices.append(next(model.parameters()).device.type),
    )
    tests = [r.test_mse for r in result.history]
    assert tests[-1] < 0.7 * tests[0], tests
    assert devices == ["cuda"] * 3
    weight = result.model.encoder[2].weight  # 64x32x3x3
    assert weight.dtype == torch.float32
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert result.test_codes.device.type == "cpu" and len(result.test_codes) == 512


def test_cuda_defaults_to_graphs_deterministic_kernels_and_ieee_float32():
    hw = resolve_hardware(CFG)
    assert (hw.device.type, hw.precision, hw.cuda_graphs, hw.deterministic) == (
        "cuda", "fp32", True, True,
    )  # fmt: skip
    assert not hw.tf32
    with hw.settings():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert not torch.are_deterministic_algorithms_enabled()  # restored


def test_a_graphed_run_equals_an_eager_one_bit_for_bit(small):
    """Under deterministic kernels replaying the captured step computes what launching its
    kernels one by one does: the warm-up before the capture leaves no trace."""
    graphed = train(small)
    eager = train(small, replace(CFG, cuda_graphs=False))
    assert numbers(graphed) == numbers(eager)
    assert graphed.final_train_mse == eager.final_train_mse
    weights = (r.model.state_dict().values() for r in (graphed, eager))
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_the_same_seed_twice_gives_the_same_mses(small):
    first, second = train(small), train(small)
    assert numbers(first) == numbers(second)
    assert first.final_train_mse == second.final_train_mse
    assert numbers(train(small, replace(CFG, seed=1))) != numbers(first)


def test_a_stop_in_a_graphed_epoch_then_a_resume_gives_the_uninterrupted_run(small):
    """A stop request raises in the step after the replay (tracking's on_step); resumed
    from the last checkpoint, the run ends exactly as one never stopped. (The health
    window outlasts these epochs, so they are trained after it, from the start.)"""
    whole = train(small)
    states, steps = [], []

    def stop_in_epoch_two() -> None:
        steps.append(1)
        if len(steps) == WINDOW + STEPS_AN_EPOCH + 10:
            raise Stop

    save = lambda state: states.append(copy.deepcopy(state))  # noqa: E731 (live tensors)
    with pytest.raises(Stop):
        train(small, on_step=stop_in_epoch_two, on_checkpoint=save)
    assert [s["epoch"] for s in states] == [1]
    resumed = train(small, resume=states[0])
    assert numbers(resumed) == numbers(whole)
    assert resumed.final_train_mse == whole.final_train_mse
