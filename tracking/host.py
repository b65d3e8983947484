"""Where a number came from: the host a run ran on, as tags.

float32 results differ slightly between instruction sets (oneDNN picks other kernels on
AVX2 than on AVX-512), so every run says which one torch used.
"""

from __future__ import annotations

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


@cache
def host_tags() -> dict[str, str]:
    import mlflow  # here, so that describe() costs no import of torch or mlflow
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        names.TAG_HOST_CPU: cpu_model(),
        names.TAG_HOST_ISA: torch.backends.cpu.get_cpu_capability(),
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
