"""Epoch benchmark: the project's training loop, in float32 and in bfloat16, against a
faithful reference of the exercise's loop, side by side, on the full MNIST training set.

Each side (the reference, the project in each precision) runs in its own process (the
reference must not inherit the project's process-wide CPU settings) and trains its own
model from the same initial weights and batch order; epochs alternate between the sides
so that drift of the machine hits all alike, and nothing else runs while an epoch is timed
(set-up and final evaluation wait their turn). Prints per-epoch times, medians (the
project's also with the epoch's evaluation), the speed-ups, bf16 against fp32, and the
test MSE of every side after the last epoch.

It also prints each model's arithmetic floor: the floating-point operations of an epoch
(forward and backward, counted by torch's FlopCounterMode) over the rate at which this
machine multiplies float32 matrices (measured in the same run), and so the largest
speed-up over the reference that any float32 implementation could reach here.

    .venv/bin/python -m benchmarks.epoch                # conv d=100 and linear d=10, 3 epochs
    .venv/bin/python -m benchmarks.epoch --epochs 1 --train-limit 2048   # smoke size
    .venv/bin/python -m benchmarks.epoch --precisions fp32   # float32 only
    .venv/bin/python -m benchmarks.epoch --device cuda       # on the GPU, both sides
    .venv/bin/python -m benchmarks.epoch --device cuda --models conv   # conv d=100 only

bf16 is left out, with a line saying so, where the device has no bfloat16 support. With
`--device cuda` the exercise's loop moves its model to the GPU and each batch with
`.to("cuda")`, as a user would; the project trains with its CUDA defaults (the step as a
CUDA graph, deterministic kernels). The floor is left out there: the step is bound by
kernel launches, not arithmetic (benchmarks.step).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from pipeline.config import ConfigError, TrainConfig, check_precision
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import FORWARD_PRECISIONS, bf16_supported, prepare_process
from pipeline.training.models import build_model
from pipeline.training.tensors import evaluate, flush_denormals, to_model_input
from pipeline.training.train import fit
from tracking.host import bf16_support, cpu_model, instruction_set

MODELS = (("conv", 100), ("linear", 10))
CPU = torch.device("cpu")
GEMM_SIZE = 2048  # square float32 matrices: large enough for the library's best rate


class EpochPermutation(Sampler):
    """What shuffle=True does, one random permutation per epoch, drawn from a generator
    seeded like the project's: both sides then see the same batches in the same order,
    so their test MSEs differ only by how each computes, not by luck. (RandomSampler
    draws a second, unused permutation per epoch, so its orders drift apart.)"""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.generator = n, torch.Generator().manual_seed(seed)

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.n


def reference_worker(conn, kind: str, latent: int, args) -> None:
    """The exercise's loop: DataLoader + ToTensor, default memory format, Adam, MSE."""
    torch.manual_seed(args.seed)  # the same initial weights as the project's side
    device = torch.device(args.device)
    model = build_model(kind, latent).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = MNIST(args.data_dir, train=True, download=False, transform=ToTensor())
    if args.train_limit:
        train = Subset(train, range(args.train_limit))
    loader = DataLoader(train, batch_size=128, sampler=EpochPermutation(len(train), args.seed))
    test = Mnist().load(args.data_dir, test_limit=args.test_limit or None, log=lambda _: None).test
    conn.send("ready")
    for _ in range(args.epochs):
        conn.recv()
        start = time.perf_counter()
        for data, _ in loader:
            data = data.to(device)
            loss = F.mse_loss(model(data), data)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the exercise sums loss.item() every step
        conn.send((time.perf_counter() - start, None))  # no evaluation in its epochs
    conn.recv()  # evaluate only when no other side is timing an epoch
    conn.send(evaluate(model, to_model_input(test.images, device)))


def project_worker(conn, kind: str, latent: int, args, precision: str) -> None:
    """The project's own fit(), paused after each epoch until the parent says go; sends
    each epoch's training seconds and its seconds with the epoch's evaluation."""
    flush_denormals()  # as the entry points do, first thing in the process
    prepare_process()
    limits = (args.train_limit or None, args.test_limit or None)  # 0: the whole split
    data = Mnist().load(args.data_dir, *limits, log=lambda _: None)
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device, precision=precision)

    def report(result, model) -> None:
        conn.send((len(data.train.images) / result.images_per_second, result.seconds))
        conn.recv()  # the next epoch, or (after the last) the end of fit, when told

    conn.send("ready")
    conn.recv()
    result = fit(
        lambda: build_model(kind, latent), data, cfg, on_epoch_end=report, log=lambda _: None
    )
    conn.send(result.history[-1].test_mse)


def flops_per_image(kind: str, latent: int, batch: int = 128) -> float:
    """Floating-point operations of one training step (forward and backward) per image."""
    model = build_model(kind, latent)
    x = torch.rand(batch, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(model(x), x).backward()
    return counter.get_total_flops() / batch


def gemm_rate(repeats: int = 7, dtype: torch.dtype = torch.float32) -> float:
    """This machine's matrix-multiply rate in dtype, FLOP/s (median of repeats), with
    torch's default threads: the best any layer of these models could run at."""
    a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype) for _ in range(2))
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * GEMM_SIZE**3 / statistics.median(times)


def receive(conn, proc) -> float:
    """The worker's next message; an error if it died (its traceback is on stderr)."""
    while not conn.poll(1.0):
        if not proc.is_alive():
            raise RuntimeError(f"benchmark worker {proc.name} exited with code {proc.exitcode}")
    return conn.recv()


def precisions_here(text: str, device: torch.device = CPU) -> tuple[str, ...]:
    """The precisions asked for (comma-separated) that the device runs; prints why bf16
    is left out where it is."""
    asked = tuple(dict.fromkeys(p.strip() for p in text.split(",")))
    if unknown := [p for p in asked if p not in FORWARD_PRECISIONS]:
        raise SystemExit(
            f"error: precisions must be among {list(FORWARD_PRECISIONS)} (got {unknown})"
        )
    try:
        wanted = "bf16" if "bf16" in asked else "fp32"
        check_precision(wanted, device.type, bf16_supported(device))
    except ConfigError as exc:
        print(f"bf16 left out: {exc}")
        asked = tuple(p for p in asked if p != "bf16")
    if not asked:
        raise SystemExit("error: no precision left to measure")
    return asked


def compare(kind: str, latent: int, args, precisions: tuple[str, ...]) -> dict:
    """Every side's (training seconds, seconds with the epoch's evaluation) per epoch, and
    its test MSE after the last epoch, by side: "reference", then the precisions."""
    ctx = mp.get_context("spawn")
    sides = {}
    targets = [("reference", reference_worker, ())]
    targets += [(p, project_worker, (p,)) for p in precisions]
    for name, target, more in targets:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, kind, latent, args, *more))
        proc.start()
        sides[name] = (parent, proc)
    for conn, proc in sides.values():  # all set up before any is timed
        receive(conn, proc)
    times = {name: [] for name in sides}
    for _ in range(args.epochs):
        for name, (conn, proc) in sides.items():
            conn.send("go")
            times[name].append(receive(conn, proc))
    mse = {}
    for name, (conn, proc) in sides.items():  # one side at a time: nothing overlaps
        conn.send("go")
        mse[name] = receive(conn, proc)
    for _, proc in sides.values():
        proc.join()
    return {"times": times, "mse": mse}


def print_sides(out: dict, epochs: int) -> dict[str, float]:
    """A line per side: its epochs, median, median with evaluation, speed-up over the
    reference and test MSE; returns the medians (training only) by side."""
    medians = {s: statistics.median(t for t, _ in times) for s, times in out["times"].items()}
    ref, mse_ref = medians["reference"], out["mse"]["reference"]
    print(
        f"  {'side':9s} {'median s':>8} {'+eval s':>8} {'speed-up':>8} {'test MSE':>9}  epochs (s)"
    )
    for side, times in out["times"].items():
        whole = [w for _, w in times if w is not None]
        with_eval = f"{statistics.median(whole):8.2f}" if whole else f"{'-':>8}"
        mse = out["mse"][side]
        change = "" if side == "reference" else f" ({mse / mse_ref - 1:+.1%})"
        print(
            f"  {side:9s} {medians[side]:8.2f} {with_eval} {ref / medians[side]:7.2f}x "
            f"{mse:9.5f}{change:9s}  " + ", ".join(f"{t:.2f}" for t, _ in times)
        )
    print(
        f"  median epoch: reference {ref:.2f} s; "
        + "; ".join(
            f"{s} {m:.2f} s, speed-up {ref / m:.2f}x"
            for s, m in medians.items()
            if s != "reference"
        )
    )
    print(
        f"  test MSE after {epochs} epochs: reference {mse_ref:.5f}; "
        + "; ".join(f"{s} {out['mse'][s]:.5f}" for s in medians if s != "reference")
    )
    if "fp32" in medians and "bf16" in medians:
        whole = {s: statistics.median(w for _, w in out["times"][s]) for s in ("fp32", "bf16")}
        mse = out["mse"]
        print(
            f"  bf16 / fp32: epoch {medians['bf16'] / medians['fp32']:.2f}x, with its "
            f"evaluation {whole['bf16'] / whole['fp32']:.2f}x; test MSE "
            f"{mse['bf16'] / mse['fp32'] - 1:+.2%}"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--test-limit", type=int, default=0)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--models", default="conv,linear", help="of conv d=100, linear d=10")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.models.split(",")]
    if unknown := sorted(set(kinds) - {kind for kind, _ in MODELS}):
        parser.exit(2, f"error: --models: unknown {unknown}; conv, linear or both\n")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda: torch finds no CUDA device here\n")
    Mnist().ensure(args.data_dir, log=lambda _: None)
    gpu = f", {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ""
    print(
        f"host: {cpu_model()}, {instruction_set()}, {bf16_support()}{gpu}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} epochs, "
        f"device {args.device}"
    )
    precisions = precisions_here(args.precisions, torch.device(args.device))
    whole = Mnist().sizes()["train"]
    n_train = min(args.train_limit or whole, whole)
    for kind, latent in [(k, d) for k, d in MODELS if k in kinds]:
        print(f"\n{kind} d={latent}")
        out = compare(kind, latent, args, precisions)
        if args.device == "cuda":
            print_sides(out, args.epochs)
            continue
        rate = gemm_rate()  # right after the epochs, on the machine as it was for them
        ref = print_sides(out, args.epochs)["reference"]
        flops = flops_per_image(kind, latent)
        floor = flops * n_train / rate
        print(
            f"  arithmetic floor: {flops / 1e6:.2f} MFLOP per image per step, "
            f"{flops * n_train / 1e12:.3f} TFLOP per epoch; float32 matrix multiply here "
            f"{rate / 1e9:.0f} GFLOP/s -> {floor:.2f} s per epoch, so at most "
            f"{ref / floor:.1f}x over the reference in float32"
        )


if __name__ == "__main__":
    main()
