"""How training runs, resolved once: precision=auto, a resumed run's precision, and the
process-wide settings of training on CUDA (torch's flags for them exist without a GPU)."""

import copy

import pytest
import torch

from pipeline.config import ConfigError, TrainConfig
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import (
    CUBLAS_WORKSPACE,
    ONEDNN_ISA_CAP,
    amx_bf16_usable,
    auto_precision,
    bf16_supported,
    check_cublas_workspace,
    cuda_settings,
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


def legacy_tf32_flags() -> tuple:
    """What code written for torch's legacy TF32 API reads: each raises where the legacy
    and the new API were mixed."""
    return (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.get_float32_matmul_precision(),
    )


@pytest.mark.parametrize("tf32", [False, True])
def test_cuda_settings_set_tf32_so_that_both_apis_read_it_and_restore_it(tf32):
    before = legacy_tf32_flags()
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    with cuda_settings(deterministic=True, tf32=tf32):
        assert legacy_tf32_flags()[:2] == (tf32, tf32)
        assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")
        new_api = (
            torch.backends.cudnn.conv.fp32_precision,
            torch.backends.cuda.matmul.fp32_precision,
        )
        assert all((value == "tf32") is tf32 for value in new_api), new_api
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
    assert legacy_tf32_flags() == before
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
    ) == flags


@pytest.mark.parametrize("value", [None, ":4096:8", ":16:8"])
def test_deterministic_cublas_workspaces_pass(value):
    check_cublas_workspace(value)


@pytest.mark.parametrize("value", [":0:0", "4096:8", ":4096:2", ""])
def test_deterministic_kernels_refuse_another_cublas_workspace_before_any_setting(
    value, monkeypatch
):
    monkeypatch.setenv(CUBLAS_WORKSPACE[0], value)
    refused = pytest.raises(
        ConfigError, match=f"CUBLAS_WORKSPACE_CONFIG unset or one of .*{value!r}"
    )
    with refused, cuda_settings(deterministic=True, tf32=False):
        pass
    assert not torch.are_deterministic_algorithms_enabled()
    with cuda_settings(deterministic=False, tf32=False):  # nondeterministic kernels: any
        assert not torch.are_deterministic_algorithms_enabled()
