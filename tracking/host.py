"""Where a number came from: the host a run ran on, as tags.

float32 results differ slightly between instruction sets (oneDNN picks other kernels on
AVX2 than on AVX-512), so every run says which one torch used.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

from tracking import names


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
"""What holds torch's own, oneDNN's and MKL's kernels below the CPU's instruction set.
With all three set to AVX2, an AVX-512 CPU runs the kernels an AVX2 host runs (at its
own clock, caches and memory, so the times are not an AVX2 host's)."""


def instruction_set() -> str:
    """The instruction set torch's kernels use, e.g. "AVX512"; with the kernel limits that
    are set, e.g. "AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2)"."""
    import torch

    isa = torch.backends.cpu.get_cpu_capability()
    limits = [f"{name}={os.environ[name]}" for name in KERNEL_LIMITS if os.environ.get(name)]
    return f"{isa} ({', '.join(limits)})" if limits else isa


def bf16_support() -> str:
    """What torch reports of bfloat16 on the CPU: whether oneDNN has bfloat16 kernels (what
    precision=bf16 requires) and whether the CPU runs them natively, e.g. "bf16 kernels
    yes (avx512_bf16 yes, amx_tile no)"."""
    import torch

    from pipeline.training.hardware import bf16_supported

    def said(name: str) -> str:
        probe = getattr(torch.cpu, f"_is_{name}_supported", None)  # private: may go
        return f"{name} {'unknown' if probe is None else 'yes' if probe() else 'no'}"

    kernels = "yes" if bf16_supported(torch.device("cpu")) else "no"
    return f"bf16 kernels {kernels} ({said('avx512_bf16')}, {said('amx_tile')})"


@cache
def host_tags() -> dict[str, str]:
    import mlflow  # here, so that describe() costs no import of torch or mlflow
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        names.TAG_HOST_CPU: cpu_model(),
        names.TAG_HOST_ISA: instruction_set(),
        names.TAG_HOST_THREADS: str(torch.get_num_threads()),
        names.TAG_HOST_GPU: gpu,
        names.TAG_TORCH_VERSION: torch.__version__,
        names.TAG_MLFLOW_VERSION: mlflow.__version__,
    }


def describe(tags: dict[str, str]) -> str:
    """One host in words, e.g. "AMD EPYC, AVX512, 2 threads, no GPU, torch 2.14.1, mlflow
    3.17.2"; "unknown host" for a run that did not record it."""
    if names.TAG_HOST_ISA not in tags:
        return "unknown host"
    gpu = tags.get(names.TAG_HOST_GPU, "none")
    return (
        f"{tags.get(names.TAG_HOST_CPU, 'unknown CPU')}, "
        f"{tags.get(names.TAG_HOST_ISA, 'unknown instruction set')}, "
        f"{tags.get(names.TAG_HOST_THREADS, '?')} threads, "
        f"{'no GPU' if gpu == 'none' else gpu}, torch {tags.get(names.TAG_TORCH_VERSION, '?')}, "
        f"mlflow {tags.get(names.TAG_MLFLOW_VERSION, '?')}"
    )
