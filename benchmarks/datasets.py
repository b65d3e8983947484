"""What the data costs a training epoch: Fashion-MNIST against MNIST (the same shape, so
the same model: the target is within 5%), and 3x32x32 images against 1x28x28 (the model
shaped by the data: CIFAR-10's shape against MNIST's).

Each side trains its own conv model (d=100 by default) with the project's step, from the
same seed; the sides take turns epoch by epoch, so that drift of the machine hits all
alike. An epoch here is the training steps over the training images in a shuffled order,
without the evaluation. MNIST and Fashion-MNIST are the real files (fetched and verified
as for a run); the 3x32x32 and 1x28x28 sides are random images of as many, because no
3x32x32 dataset is offline here (the cost of a step depends on the shape, not the pixels).

    .venv/bin/python -m benchmarks.datasets                       # 3 epochs, 60,000 images
    .venv/bin/python -m benchmarks.datasets --epochs 1 --train-limit 1024   # smoke size
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.config import DataConfig, TrainConfig
from pipeline.training import datasets
from pipeline.training.attempt import Attempt
from pipeline.training.hardware import resolve_hardware
from pipeline.training.models import build_model
from pipeline.training.tensors import flush_denormals, to_model_input
from tracking.host import cpu_model, instruction_set

PAIRS = (("mnist", "fashion-mnist"), ("1x28x28", "3x32x32"))
RANDOM_SHAPES = {"1x28x28": (1, 28, 28), "3x32x32": (3, 32, 32)}


def images(side: str, args) -> torch.Tensor:
    """A side's training images, uint8 (n, C, H, W): a dataset's, or random ones."""
    if side in RANDOM_SHAPES:
        generator = torch.Generator().manual_seed(args.seed)
        shape = (args.train_limit or 60_000, *RANDOM_SHAPES[side])
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    cfg = DataConfig(args.data_dir, side, train_limit=args.train_limit or None, test_limit=1)
    return datasets.load(cfg, log=lambda _: None).train.images


def epoch_seconds(att: Attempt, x: torch.Tensor) -> float:
    """One shuffled pass of training steps over x; the loss is read once, at the end, as
    the loop's finite check does."""
    att.model.train()
    start = time.perf_counter()
    total = torch.zeros((), dtype=torch.float64)
    for index in att.batches(x):
        total += att.train_step(x[index]).double()
    total.item()
    return time.perf_counter() - start


def compare(pair: tuple[str, str], args) -> dict[str, list[float]]:
    """Epoch seconds of each side of the pair, the sides taking turns."""
    cfg = TrainConfig(seed=args.seed, precision=args.precision, device="cpu")
    hardware = resolve_hardware(cfg)
    sides = {}
    for side in pair:
        x = to_model_input(images(side, args), hardware.device)
        shape = tuple(x.shape[1:])
        build = lambda shape=shape: build_model("conv", args.latent_dim, shape)  # noqa: E731
        sides[side] = (Attempt(build, args.seed, cfg, hardware, None), x)
    times: dict[str, list[float]] = {side: [] for side in pair}
    with hardware.settings():
        for _ in range(args.epochs):
            for side, (att, x) in sides.items():
                times[side].append(epoch_seconds(att, x))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-dim", type=int, default=100)
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--train-limit", type=int, default=0, help="0: all 60,000")
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16"))
    args = parser.parse_args()
    flush_denormals()
    print(
        f"host: {cpu_model()}, {instruction_set()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; conv d={args.latent_dim}, {args.epochs} epochs "
        f"of {args.train_limit or 60_000:,} images, precision {args.precision}"
    )
    for reference, other in PAIRS:
        times = compare((reference, other), args)
        medians = {side: statistics.median(t) for side, t in times.items()}
        for side, t in times.items():
            each = ", ".join(f"{s:.2f}" for s in t)
            print(f"  {side:>14}: median {medians[side]:.2f} s per epoch ({each})")
        ratio = medians[other] / medians[reference]
        print(f"  {other} / {reference}: {ratio:.3f}x")


if __name__ == "__main__":
    main()
