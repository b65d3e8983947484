"""Training on a CUDA device: both precisions, the step as a CUDA graph that really
replays, reproducible runs (in one process and across two), stops and resumes.
Skipped, with the reason, where there is no CUDA device (CI, the CPU machines)."""

import copy
import io
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.training import graphs
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import FORWARD_PRECISIONS, bf16_supported, resolve_hardware
from pipeline.training.health import HEALTH_WINDOW
from pipeline.training.models import build_model
from pipeline.training.train import fit
from tests.conftest import REPO_ROOT
from tests.pipeline.training.test_train import failing_first

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: torch.cuda.is_available() is False here",
)
# 2048 training images in batches of 96: 21 full batches and a last one of 32 an epoch.
CFG = TrainConfig(epochs=3, batch_size=96, device="cuda", precision="fp32")
STEPS_AN_EPOCH = 22
FULL_BATCHES = 21
WINDOW = min(HEALTH_WINDOW, CFG.epochs * STEPS_AN_EPOCH)  # the health window: all 3 epochs
# Batches of 8: 256 full ones an epoch, so the health window (200 steps) ends inside the
# first epoch and the attempt that captured its graph in the window goes on training.
MID = replace(CFG, epochs=2, batch_size=8)
MID_STEPS = 256


class Stop(Exception):
    """What a stop request raises in a step (tracking's is KeyboardInterrupt or Terminated)."""


@pytest.fixture(scope="module")
def small(mnist_dir):
    return Mnist().load(mnist_dir, train_limit=2048, test_limit=512, log=lambda _: None)


def train(data, cfg=CFG, **kw):
    return fit(lambda: build_model("conv", 10), data, cfg, log=lambda _: None, **kw)


def numbers(result):
    return [(r.train_mse, r.test_mse, r.train_eval_mse) for r in result.history]


def same_weights(a, b) -> bool:
    pairs = zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True)
    return all(torch.equal(p, q) for p, q in pairs)


def stop_at(step: int):
    """on_step: raises Stop at the step-th optimiser step of the whole fit."""
    steps = []

    def on_step() -> None:
        steps.append(1)
        if len(steps) == step:
            raise Stop

    return on_step


def stopped_checkpoint(data, cfg, step: int):
    """The last checkpoint of a run stopped at its step-th optimiser step."""
    states = []
    save = lambda state: states.append(copy.deepcopy(state))  # noqa: E731 (live tensors)
    with pytest.raises(Stop):
        train(data, cfg, on_step=stop_at(step), on_checkpoint=save)
    return states[-1]


@pytest.fixture
def replays(monkeypatch):
    """Every CUDAGraph.replay() in the test, counted."""
    calls = []
    real = torch.cuda.CUDAGraph.replay

    def counted(graph):
        calls.append(1)
        return real(graph)

    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counted)
    return calls


@pytest.fixture
def captures(monkeypatch):
    """Every capture in the test, counted."""
    calls = []
    real = graphs.capture

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(graphs, "capture", counted)
    return calls


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
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.conv.fp32_precision != "tf32"
        assert torch.get_float32_matmul_precision() == "highest"
    assert not torch.are_deterministic_algorithms_enabled()  # restored


def test_a_graphed_run_equals_an_eager_one_bit_for_bit(small):
    """Under deterministic kernels replaying the captured step computes what launching its
    kernels one by one does: the warm-up before the capture leaves no trace."""
    graphed = train(small)
    eager = train(small, replace(CFG, cuda_graphs=False))
    assert numbers(graphed) == numbers(eager)
    assert graphed.final_train_mse == eager.final_train_mse
    assert same_weights(graphed, eager)
    assert (graphed.graph_replays, eager.graph_replays) == (CFG.epochs * FULL_BATCHES, 0)


def test_every_full_batch_replays_the_graph_once(small, replays, captures):
    """The window outlasts the 3 epochs: its attempt captures and replays, then the kept
    initialisation is trained again from the start, capturing its own graph. Each replays
    once per full batch; the epochs' last batches (32 images) run eagerly."""
    result = train(small)
    assert len(captures) == 2
    assert len(replays) == 2 * CFG.epochs * FULL_BATCHES
    assert result.graph_replays == CFG.epochs * FULL_BATCHES


def test_a_window_ending_mid_epoch_is_graphed_as_eager_and_survives_a_stop(mnist_dir, captures):
    """The attempt that captured its graph in the health window goes on replaying it after
    the window's look at the probe, bit for bit as an eager run; stopped in its second epoch
    and resumed, it ends the same again, counting the replays from before the stop."""
    data = Mnist().load(mnist_dir, train_limit=2048, test_limit=256, log=lambda _: None)
    graphed = train(data, MID)
    assert len(captures) == 1  # the window's attempt is kept and goes on
    eager = train(data, replace(MID, cuda_graphs=False))
    assert numbers(graphed) == numbers(eager) and same_weights(graphed, eager)
    assert graphed.final_train_mse == eager.final_train_mse
    assert graphed.graph_replays == MID.epochs * MID_STEPS
    state = stopped_checkpoint(data, MID, MID_STEPS + 50)
    assert (state["epoch"], state["graph_replays"]) == (1, MID_STEPS)
    resumed = train(data, MID, resume=state)
    assert numbers(resumed) == numbers(graphed) and same_weights(resumed, graphed)
    assert resumed.graph_replays == MID.epochs * MID_STEPS


def test_bf16_graphed_equals_bf16_eager(small):
    if not bf16_supported(torch.device("cuda")):
        pytest.skip("torch.cuda.is_bf16_supported() is False for this GPU")
    bf16 = replace(CFG, precision="bf16")
    graphed, eager = train(small, bf16), train(small, replace(bf16, cuda_graphs=False))
    assert numbers(graphed) == numbers(eager) and same_weights(graphed, eager)
    assert graphed.graph_replays == CFG.epochs * FULL_BATCHES


def test_a_restart_captures_a_graph_of_its_own_in_the_same_process(small, captures):
    """The first initialisation collapses and is replaced by its restart seed: each
    attempt captures its own graph (the collapsed one, the restart's window, the kept one
    trained again), and the run ends as the same restart does eagerly."""
    restarts = []
    graphed = fit(failing_first(10), small, CFG, on_restart=restarts.append, log=lambda _: None)
    assert len(restarts) == 1 and len(captures) == 3
    eager = fit(failing_first(10), small, replace(CFG, cuda_graphs=False), log=lambda _: None)
    assert numbers(graphed) == numbers(eager) and same_weights(graphed, eager)
    assert graphed.graph_replays == CFG.epochs * FULL_BATCHES


TWICE = """
import hashlib, sys
import torch
from pipeline.config import TrainConfig
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.models import build_model
from pipeline.training.train import fit
data = Mnist().load(sys.argv[1], train_limit=2048, test_limit=512, log=lambda _: None)
cfg = TrainConfig(epochs=3, batch_size=96, device="cuda", precision="fp32")
result = fit(lambda: build_model("conv", 10), data, cfg, log=lambda _: None)
digest = hashlib.sha256()
for tensor in result.model.state_dict().values():
    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
print([(r.train_mse, r.test_mse) for r in result.history], result.graph_replays, digest.hexdigest())
"""


def test_two_processes_with_the_same_seed_give_the_same_bits(mnist_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    outputs = [
        subprocess.run(
            [sys.executable, "-c", TWICE, str(mnist_dir)],
            capture_output=True, text=True, env=env, timeout=300, check=True,
        ).stdout.splitlines()[-1]
        for _ in range(2)
    ]  # fmt: skip
    assert outputs[0] == outputs[1]
    assert f" {CFG.epochs * FULL_BATCHES} " in outputs[0]  # graphed in both


def test_a_graphed_checkpoint_resumes_eagerly_and_on_the_cpu(small):
    """Its weights and Adam state (capturable, on the GPU) go on eagerly to the graphed
    run's bits, and on the CPU (read as tracking reads a checkpoint) to a run that learns
    on from the same epoch."""
    whole = train(small)
    state = stopped_checkpoint(small, CFG, WINDOW + STEPS_AN_EPOCH + 10)
    assert state["epoch"] == 1
    eager = train(small, replace(CFG, cuda_graphs=False), resume=state)
    assert numbers(eager) == numbers(whole) and same_weights(eager, whole)
    assert eager.graph_replays == FULL_BATCHES  # the first epoch's, before the stop
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    on_cpu = torch.load(buffer, map_location="cpu", weights_only=True)
    cpu = train(small, replace(CFG, device="cpu"), resume=on_cpu)
    assert next(cpu.model.parameters()).device.type == "cpu"
    assert numbers(cpu)[0] == numbers(whole)[0]  # the checkpoint's epoch, as recorded
    assert cpu.final.test_mse == pytest.approx(whole.final.test_mse, rel=0.1)
    assert cpu.final.test_mse < cpu.history[0].test_mse


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
    state = stopped_checkpoint(small, CFG, WINDOW + STEPS_AN_EPOCH + 10)
    assert state["epoch"] == 1
    resumed = train(small, resume=state)
    assert numbers(resumed) == numbers(whole)
    assert resumed.final_train_mse == whole.final_train_mse
