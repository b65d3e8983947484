"""Epoch benchmark: the project's training loop against a faithful reference of the
exercise's loop, side by side, on the full MNIST training set.

Each side runs in its own process (the reference must not inherit the project's
process-wide CPU settings) and trains its own model from the same initial weights;
epochs alternate between the two so that drift of the machine hits both alike. Prints
per-epoch times, medians, the speed-up and the test MSE of both after the last epoch.

    .venv/bin/python -m benchmarks.epoch                # conv d=100 and linear d=10, 3 epochs
    .venv/bin/python -m benchmarks.epoch --epochs 1 --train-limit 2048   # smoke size
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, Subset
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from pipeline.config import TrainConfig
from pipeline.data import ensure_mnist, load_mnist
from pipeline.models import build_model
from pipeline.train import evaluate, fit, flush_denormals, to_model_input

MODELS = (("conv", 100), ("linear", 10))


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
    model = build_model(kind, latent)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = MNIST(args.data_dir, train=True, download=False, transform=ToTensor())
    if args.train_limit:
        train = Subset(train, range(args.train_limit))
    loader = DataLoader(train, batch_size=128, sampler=EpochPermutation(len(train), args.seed))
    for _ in range(args.epochs):
        conn.recv()
        start = time.perf_counter()
        for data, _ in loader:
            loss = F.mse_loss(model(data), data)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        conn.send(time.perf_counter() - start)
    test = load_mnist(args.data_dir, test_limit=args.test_limit or None, log=lambda _: None).test
    conn.send(evaluate(model, to_model_input(test.images, torch.device("cpu"))))


def project_worker(conn, kind: str, latent: int, args) -> None:
    """The project's own fit(), paused after each epoch until the parent says go."""
    flush_denormals()  # as the entry points do, first thing in the process
    limits = (args.train_limit or None, args.test_limit or None)  # 0: the whole split
    data = load_mnist(args.data_dir, *limits, log=lambda _: None)
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, device="cpu")

    def report(result, model) -> None:
        conn.send(len(data.train.images) / result.images_per_second)
        if result.epoch < args.epochs:
            conn.recv()

    conn.recv()
    result = fit(
        lambda: build_model(kind, latent), data, cfg, on_epoch_end=report, log=lambda _: None
    )
    conn.send(result.history[-1].test_mse)


def receive(conn, proc) -> float:
    """The worker's next message; an error if it died (its traceback is on stderr)."""
    while not conn.poll(1.0):
        if not proc.is_alive():
            raise RuntimeError(f"benchmark worker {proc.name} exited with code {proc.exitcode}")
    return conn.recv()


def compare(kind: str, latent: int, args) -> dict:
    ctx = mp.get_context("spawn")
    sides = {}
    for name, target in (("reference", reference_worker), ("project", project_worker)):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, kind, latent, args))
        proc.start()
        sides[name] = (parent, proc)
    times = {name: [] for name in sides}
    for _ in range(args.epochs):
        for name, (conn, proc) in sides.items():
            conn.send("go")
            times[name].append(receive(conn, proc))
    mse = {name: receive(conn, proc) for name, (conn, proc) in sides.items()}
    for _, proc in sides.values():
        proc.join()
    return {"times": times, "mse": mse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--test-limit", type=int, default=0)
    args = parser.parse_args()
    ensure_mnist(args.data_dir, log=lambda _: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} epochs")
    for kind, latent in MODELS:
        out = compare(kind, latent, args)
        ref, own = (statistics.median(out["times"][s]) for s in ("reference", "project"))
        mse_ref, mse_own = out["mse"]["reference"], out["mse"]["project"]
        print(f"\n{kind} d={latent}")
        for side in ("reference", "project"):
            print(f"  {side:9s} epochs (s): " + ", ".join(f"{t:.2f}" for t in out["times"][side]))
        print(
            f"  median epoch: reference {ref:.2f} s, project {own:.2f} s, speed-up {ref / own:.2f}x"
        )
        print(
            f"  test MSE after {args.epochs} epochs: reference {mse_ref:.5f}, project "
            f"{mse_own:.5f} ({mse_own / mse_ref - 1:+.1%})"
        )


if __name__ == "__main__":
    main()
