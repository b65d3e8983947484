"""Step benchmark: one training step of conv d=100 as the project runs it (Attempt.train_step),
eager against replayed from a CUDA graph, fp32 against bf16, at batch 128 and 1024; on CUDA
also what deterministic kernels and IEEE float32 (TF32 off) cost.

On a GPU this step is bound by kernel launches: an eager step at batch 1024 costs about
what one at 128 does. The graphed rows show what launching the whole step at once buys.
Each row trains its own model from the same initial weights on random batches held on the
device; the median of `--repeats` steps after `--warmup` steps (the first graphed step
captures the graph). Prints the device (the GPU's name), a row per configuration, then the
ratios: graphed / eager, bf16 / fp32, and TF32 or any kernels / deterministic IEEE fp32.
Each row stands alone: one that fails (a graph that could not be captured included: it
would have timed the eager step) prints its error, the others go on, and the exit status
is 1.

`--probe` is the first minute of a GPU session (benchmarks/gpu.sh): the versions, then one
deterministic graphed step at batch 128 in fp32 and one in bf16, each reporting alone.

    .venv/bin/python -m benchmarks.step                  # on CUDA: every row
    .venv/bin/python -m benchmarks.step --device cpu     # the CPU has no graphs: eager rows
    .venv/bin/python -m benchmarks.step --repeats 20 --batches 128
    python -m benchmarks.step --probe                    # on the GPU machine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from pipeline.config import TrainConfig
from pipeline.training.attempt import Attempt
from pipeline.training.hardware import (
    FORWARD_PRECISIONS,
    Hardware,
    bf16_supported,
    prepare_process,
    resolve_device,
)
from pipeline.training.models import build_model
from pipeline.training.tensors import flush_denormals
from tracking.host import cpu_model, instruction_set

LATENT = 100


def device_line(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model and instruction set."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{cpu_model()}, {instruction_set()}, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(hw: Hardware, batch: int, warmup: int, repeats: int) -> float:
    """Median seconds of one training step on hw at this batch size. RuntimeError where
    hw asks for a graph and none replayed (its capture failed: the steps ran eagerly)."""
    cfg = TrainConfig(batch_size=batch, device=hw.device.type, precision=hw.precision)
    att = Attempt(lambda: build_model("conv", LATENT), 0, cfg, hw, None)
    x = torch.rand(batch, 1, 28, 28, device=hw.device).contiguous(memory_format=torch.channels_last)
    times = []
    with hw.settings():
        for i in range(warmup + repeats):
            sync(hw.device)
            start = time.perf_counter()
            att.train_step(x)
            sync(hw.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    if hw.cuda_graphs and att.graph_replays != warmup + repeats:
        raise RuntimeError(f"{att.graph_replays} of {warmup + repeats} steps replayed the graph")
    return statistics.median(times)


@dataclass(frozen=True)
class Row:
    precision: str
    batch: int
    graphed: bool
    deterministic: bool = True
    tf32: bool = False

    def words(self) -> str:
        kernels = ("deterministic" if self.deterministic else "any kernels") + (
            ", TF32" if self.tf32 else ""
        )
        way = "graphed" if self.graphed else "eager"
        return f"{self.precision:9s} {self.batch:5d} {way:7s} {kernels:20s}"


def rows_for(device: torch.device, precisions: list[str], batches: list[int]) -> list[Row]:
    """Every precision, batch and way; on CUDA also fp32 with any kernels (what
    determinism costs) and with TF32 (what IEEE float32 costs), both graphed."""
    if device.type != "cuda":
        return [Row(p, b, False) for p in precisions for b in batches]  # the CPU's: deterministic
    rows = [Row(p, b, g) for p in precisions for b in batches for g in (False, True)]
    rows += [Row("fp32", b, True, deterministic=False) for b in batches]
    return rows + [Row("fp32", b, True, tf32=True) for b in batches]


def measure(row: Row, device: torch.device, args) -> float:
    hw = Hardware(device, row.precision, row.graphed, row.deterministic, row.tf32)
    return step_seconds(hw, row.batch, args.warmup, args.repeats)


def ratios(seconds: dict[Row, float]) -> list[str]:
    """Each row against the deterministic IEEE eager fp32 row of its batch, and graphed
    against eager in its own precision."""
    lines = []
    for row, s in seconds.items():
        eager = seconds.get(Row(row.precision, row.batch, False, row.deterministic))
        if row.graphed and eager and not row.tf32 and row.deterministic:
            lines.append(f"  {row.precision} batch {row.batch}: graphed / eager {s / eager:.2f}x")
        base = seconds.get(Row("fp32", row.batch, row.graphed, row.deterministic))
        if row.precision == "bf16" and base:
            way = "graphed" if row.graphed else "eager"
            lines.append(f"  batch {row.batch} {way}: bf16 / fp32 {s / base:.2f}x")
        strict = seconds.get(Row("fp32", row.batch, True))
        if row.graphed and strict and (row.tf32 or not row.deterministic):
            what = "TF32" if row.tf32 else "any kernels"
            lines.append(f"  batch {row.batch} graphed fp32: {what} / deterministic IEEE "
                         f"{s / strict:.2f}x")  # fmt: skip
    return lines


def versions(device: torch.device) -> str:
    """torch, CUDA, cuDNN and the GPU's compute capability, in words."""
    line = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        line += f", cuDNN {torch.backends.cudnn.version()}, compute capability {major}.{minor}"
    return line


def run_rows(rows: list[Row], device: torch.device, args) -> dict[Row, float]:
    """Each row measured and printed alone: a failing row prints its error instead."""
    print(f"  {'precision':9s} {'batch':>5s} {'step':7s} {'kernels':20s} {'ms':>8s}")
    seconds = {}
    for row in rows:
        try:
            seconds[row] = measure(row, device, args)
        except Exception as exc:  # a row's failure is a result: the others go on
            why = (str(exc).splitlines() or [""])[0]
            print(f"  {row.words()} FAILED: {type(exc).__name__}: {why}", flush=True)
            continue
        print(f"  {row.words()} {seconds[row] * 1e3:8.3f}", flush=True)
    return seconds


def probe_rows(device: torch.device) -> list[Row]:
    """One deterministic graphed step at batch 128 per precision (bf16 too where torch
    says the GPU has none: its failure is then the finding)."""
    return [Row(p, 128, graphed=device.type == "cuda") for p in FORWARD_PRECISIONS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--batches", default="128,1024", help="batch sizes, comma-separated")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--probe", action="store_true", help="versions and one step per precision")
    args = parser.parse_args()
    flush_denormals()
    prepare_process()
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        parser.exit(2, f"error: {exc}\n")
    if args.probe:
        print(f"device: {device_line(device)}; {versions(device)}")
        args.warmup, args.repeats = 1, 3
        rows = probe_rows(device)
    else:
        batches = [int(b) for b in args.batches.split(",")]
        precisions = [p for p in FORWARD_PRECISIONS if p == "fp32" or bf16_supported(device)]
        print(f"device: {device_line(device)}; conv d={LATENT}, median of {args.repeats} steps")
        if device.type != "cuda":
            print("  no CUDA here: eager rows only")
        if "bf16" not in precisions:
            print("  bf16 left out: torch reports no bfloat16 support on this device")
        rows = rows_for(device, precisions, batches)
    seconds = run_rows(rows, device, args)
    for line in ratios(seconds):
        print(line)
    if len(seconds) < len(rows):
        sys.exit(f"{len(rows) - len(seconds)} of {len(rows)} rows failed")


if __name__ == "__main__":
    main()
