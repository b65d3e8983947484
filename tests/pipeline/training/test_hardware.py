"""How training runs, resolved once: precision=auto, and a resumed run's precision."""

import copy

import pytest
import torch

from pipeline.config import ConfigError, TrainConfig
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import (
    ONEDNN_ISA_CAP,
    amx_bf16_usable,
    auto_precision,
    bf16_supported,
    isa_cap_allows_amx,
    resolve_hardware,
)
from pipeline.training.models import build_model
from pipeline.training.train import fit

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small(mnist_dir):
    return Mnist().load(mnist_dir, train_limit=1024, test_limit=256, log=lambda _: None)


def numbers(result):
    return [(r.train_mse, r.test_mse, r.train_eval_mse) for r in result.history]


@pytest.mark.parametrize(
    ("cap", "allows"),
    [
        (None, True),
        ("", True),
        ("ALL", True),
        ("default", True),
        ("AVX512_CORE_AMX", True),
        ("avx10_1_512_amx_fp16", True),
        ("AVX512_CORE_BF16", False),
        ("AVX512_CORE", False),
        ("AVX2", False),
    ],
)
def test_onednn_isa_cap_allows_amx_only_at_or_above_it(cap, allows):
    assert isa_cap_allows_amx(cap) is allows


def test_auto_is_fp32_where_onednn_is_held_below_amx(monkeypatch):
    monkeypatch.setenv(ONEDNN_ISA_CAP, "AVX512_CORE_BF16")
    assert not amx_bf16_usable()
    assert auto_precision(CPU) == "fp32"
    assert resolve_hardware(TrainConfig(device="cpu")).precision == "fp32"


def test_auto_is_fp32_on_a_cpu_without_amx_and_on_cuda():
    if not torch.cpu._is_amx_tile_supported():  # AVX2 and AVX-512 hosts without AMX
        assert not amx_bf16_usable() and auto_precision(CPU) == "fp32"
    assert auto_precision(torch.device("cuda")) == "fp32"  # until the CUDA benchmarks decide


def test_an_explicit_precision_is_kept_and_bf16_without_kernels_is_refused():
    assert resolve_hardware(TrainConfig(device="cpu", precision="fp32")).precision == "fp32"
    if bf16_supported(CPU):
        assert resolve_hardware(TrainConfig(device="cpu", precision="bf16")).precision == "bf16"
    else:
        with pytest.raises(ConfigError, match="precision must be auto or fp32 here"):
            resolve_hardware(TrainConfig(device="cpu", precision="bf16"))


def test_auto_trains_exactly_as_the_precision_it_picks(small):
    """On a host without AMX, auto is fp32 bit for bit; on one with AMX, bf16."""
    picked = auto_precision(CPU)
    runs = {
        precision: fit(
            lambda: build_model("conv", 10),
            small,
            TrainConfig(epochs=2, batch_size=64, device="cpu", precision=precision),
            log=lambda _: None,
        )
        for precision in ("auto", picked)
    }
    assert numbers(runs["auto"]) == numbers(runs[picked])
    assert runs["auto"].final_train_mse == runs[picked].final_train_mse


def test_a_resumed_run_keeps_the_precision_it_began_in(small):
    """Its checkpoint names its precision: resumed under another one asked for (here bf16,
    which this host may not even run), it goes on in fp32 exactly as if never stopped."""
    states = []
    cfg = TrainConfig(epochs=2, batch_size=64, device="cpu", precision="fp32")
    save = lambda state: states.append(copy.deepcopy(state))  # noqa: E731 (live tensors)
    whole = fit(lambda: build_model("conv", 10), small, cfg, on_checkpoint=save, log=lambda _: None)
    assert states[0]["precision"] == "fp32"
    asked_bf16 = TrainConfig(epochs=2, batch_size=64, device="cpu", precision="bf16")
    resumed = fit(
        lambda: build_model("conv", 10), small, asked_bf16, resume=states[0], log=lambda _: None
    )
    assert numbers(resumed) == numbers(whole)
