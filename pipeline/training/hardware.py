"""Where and how training runs, chosen once: the device, the precision the training
forward runs in, and on CUDA the step as a CUDA graph and deterministic kernels.
`resolve_hardware` turns a TrainConfig's choices ("auto" among them) into one Hardware
where the device is resolved; the loop reads that object, and a run records it
(tracking.requests).

precision=auto means bf16 where it is fast and as good (docs/precision.md): on a CPU
whose oneDNN runs bfloat16 on AMX; everywhere else, CUDA included until its benchmarks
decide, fp32. On CUDA, fp32 is IEEE float32: TF32, which PyTorch allows cuDNN's
convolutions by default, is off (CUDA_TF32), so that a GPU's float32 is the CPU's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from pipeline.config import ConfigError, TrainConfig, check_precision

FORWARD_PRECISIONS = ("fp32", "bf16")
"""What a training forward runs in; precision=auto resolves to one of them."""
ONEDNN_ISA_CAP = "ONEDNN_MAX_CPU_ISA"
ISA_CAPS_WITH_AMX = ("DEFAULT", "ALL")
"""Values of ONEDNN_MAX_CPU_ISA that leave AMX to oneDNN, besides every name holding
"AMX" (AVX512_CORE_AMX, AVX10_1_512_AMX, AVX512_CORE_AMX_FP16, ...). Any other value
(AVX512_CORE_BF16, AVX2, ...) keeps oneDNN's kernels below AMX."""
CUDA_TF32 = False
"""Whether float32 convolutions and matrix multiplies may run in TF32 on CUDA. Off: fp32
means IEEE float32 on every device, until the CUDA benchmarks measure what TF32 buys and
costs here (docs/performance.md). Recorded on every run (tracking.requests)."""
CUBLAS_WORKSPACE = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
"""What deterministic cuBLAS needs (PyTorch's reproducibility notes). cuBLAS reads it once,
at its first use in the process: prepare_process sets it before any CUDA work."""
DETERMINISTIC_CUBLAS_WORKSPACES = (":4096:8", ":16:8")
"""The values of CUBLAS_WORKSPACE_CONFIG under which torch lets cuBLAS run deterministically."""


def prepare_process() -> None:
    """What a process that may train on CUDA sets before its first CUDA work: cuBLAS's
    workspace for deterministic kernels (unless the environment sets its own)."""
    os.environ.setdefault(*CUBLAS_WORKSPACE)


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """Whether torch runs bfloat16 on the device: on CUDA torch.cuda.is_bf16_supported();
    on the CPU whether oneDNN has bfloat16 kernels there (AVX-512 or newer: AVX512-BF16 and
    AMX natively; it honours ONEDNN_MAX_CPU_ISA), else bf16 convolutions fall back to
    slow reference loops."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def isa_cap_allows_amx(cap: str | None) -> bool:
    """Whether an ONEDNN_MAX_CPU_ISA value (None: unset) lets oneDNN use AMX."""
    value = (cap or "").strip().upper()
    return not value or value in ISA_CAPS_WITH_AMX or "AMX" in value


def amx_bf16_usable() -> bool:
    """Whether oneDNN runs bfloat16 on AMX on this CPU: it has AMX tiles and the kernel
    lets torch use them (torch.cpu._is_amx_tile_supported(), which asks the kernel for the
    tiles' permission), oneDNN has bfloat16 kernels, and ONEDNN_MAX_CPU_ISA, if set, does
    not hold oneDNN below AMX."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private: may go
    return (
        amx is not None
        and amx()
        and bf16_supported(torch.device("cpu"))
        and isa_cap_allows_amx(os.environ.get(ONEDNN_ISA_CAP))
    )


def auto_precision(device: torch.device) -> str:
    """What precision=auto trains in on the device: bf16 on a CPU with AMX, else fp32.
    On CUDA, fp32 until the CUDA benchmarks measure bf16 faster at equal quality
    (docs/precision.md)."""
    return "bf16" if device.type == "cpu" and amx_bf16_usable() else "fp32"


def precision_used(precision: str, device: torch.device) -> str:
    """What `precision` (auto, fp32 or bf16) trains in on the device."""
    return auto_precision(device) if precision == "auto" else precision


def require_precision(precision: str, device_name: str) -> None:
    """ConfigError if `precision` is bf16 and the device that `device_name` resolves to
    (pipeline.config.check_precision decides, from what torch reports) has none."""
    if precision == "bf16":
        device = resolve_device(device_name)
        check_precision(precision, device.type, bf16_supported(device))


@dataclass(frozen=True)
class Hardware:
    """How a run trains: on which device, in which precision its forward runs, and on
    CUDA whether its steps replay a CUDA graph and its kernels are deterministic."""

    device: torch.device
    precision: str
    """One of FORWARD_PRECISIONS: auto already resolved."""
    cuda_graphs: bool = False
    """Full batches replay one captured step (pipeline.training.graphs); only on CUDA."""
    deterministic: bool = False
    """Deterministic CUDA kernels (settings()); the CPU's are deterministic anyway."""
    tf32: bool = False
    """float32 convolutions and matrix multiplies in TF32 (CUDA_TF32); only on CUDA."""

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of a training forward: bfloat16 autocast for bf16 (matrix
        multiplies and convolutions in bfloat16, the float32 weights cast per use);
        nothing for fp32. A captured graph cannot keep autocast's cache of cast weights
        (PyTorch's CUDA graph notes): it is off there."""
        if self.precision == "bf16":
            cache = not self.cuda_graphs
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=cache)
        return contextlib.nullcontext()

    def settings(self) -> contextlib.AbstractContextManager:
        """torch's process-wide settings for training on this hardware, restored after.
        On the CPU: none (its path stays as it always was). On CUDA: cuda_settings."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return cuda_settings(self.deterministic, self.tf32)


@contextlib.contextmanager
def cuda_settings(deterministic: bool, tf32: bool) -> Iterator[None]:
    """torch's process-wide settings for training on CUDA, restored after: TF32 as `tf32`
    says, and with `deterministic` deterministic algorithms, cuDNN's deterministic kernels
    and no autotuning (uninitialised memory is not filled: it costs a kernel per allocation
    and this model reads none). ConfigError where `deterministic` meets a cuBLAS workspace
    that is not a deterministic one.

    TF32 through torch's legacy flags only (torch.backends.cudnn.allow_tf32,
    torch.backends.cuda.matmul.allow_tf32): each of them also sets the new API's values
    (fp32_precision), so both read alike. The new API alone cannot do that: setting
    cudnn.conv.fp32_precision leaves the legacy cuDNN flag as it was, and reading
    torch.backends.cudnn.allow_tf32 then raises ("a mix of the legacy and new APIs")."""
    prepare_process()
    if deterministic:
        check_cublas_workspace(os.environ.get(CUBLAS_WORKSPACE[0]))
    backends, fill = torch.backends, torch.utils.deterministic
    before = (
        torch.are_deterministic_algorithms_enabled(),
        backends.cudnn.deterministic,
        backends.cudnn.benchmark,
        fill.fill_uninitialized_memory,
        backends.cudnn.allow_tf32,
        backends.cuda.matmul.allow_tf32,
    )
    try:
        torch.use_deterministic_algorithms(deterministic)
        backends.cudnn.deterministic = deterministic
        backends.cudnn.benchmark = False
        fill.fill_uninitialized_memory = False
        backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = tf32
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        backends.cudnn.deterministic, backends.cudnn.benchmark = before[1:3]
        fill.fill_uninitialized_memory = before[3]
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = before[4:]


def check_cublas_workspace(value: str | None) -> None:
    """ConfigError unless CUBLAS_WORKSPACE_CONFIG (None: unset, prepare_process sets it) is
    one that deterministic cuBLAS accepts. cuBLAS reads it once, at its first use in the
    process: a wrong one would fail the run at its first matrix multiply, or later."""
    if value is not None and value not in DETERMINISTIC_CUBLAS_WORKSPACES:
        raise ConfigError(
            f"deterministic=true needs {CUBLAS_WORKSPACE[0]} unset or one of "
            f"{list(DETERMINISTIC_CUBLAS_WORKSPACES)} (got {value!r}): unset it, set it so, "
            "or train with -P deterministic=false"
        )


def resolve_hardware(cfg: TrainConfig, precision: str | None = None) -> Hardware:
    """The hardware that cfg asks for on this machine. `precision`, where given (a resumed
    run's, from its checkpoint), replaces cfg's: a run keeps the precision it began in.
    ConfigError where bf16 is asked for and the device has none, and where deterministic
    kernels on CUDA meet a cuBLAS workspace that is not deterministic (before any training)."""
    device = resolve_device(cfg.device)
    used = precision_used(precision or cfg.precision, device)
    if used == "bf16":
        check_precision(used, device.type, bf16_supported(device))
    cuda = device.type == "cuda"
    if cfg.deterministic and cuda:
        check_cublas_workspace(os.environ.get(CUBLAS_WORKSPACE[0]))
    return Hardware(
        device, used, cfg.cuda_graphs and cuda, cfg.deterministic and cuda, CUDA_TF32 and cuda
    )
