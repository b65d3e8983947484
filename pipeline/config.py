"""Typed, validated configuration: one frozen dataclass per concern. Imports neither torch
nor MLflow, so that the command line refuses bad input at once.

Each dataclass checks its fields on construction and raises ``ConfigError`` with a
one-line message that names the parameter and what is allowed, so bad input stops
before any data is read or any run is created.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODEL_KINDS = ("conv", "linear")  # pipeline.models builds each
DEVICES = ("auto", "cpu", "cuda")
MAX_SEED = 10_000
"""Seeds are under this; restart k of seed s uses seed s + k * MAX_SEED
(pipeline.train.RESTART_STRIDE), so that no restart lands on another run's seed."""
DEFAULT_MARGIN = round(10 ** (1 / 10) - 1, 4)
"""Default of the recommendation's margin, 0.2589: an MSE that much above the best is
1 dB of PSNR, about the smallest difference one sees between two reconstructions side by
side, while every latent unit the conv model drops saves 4,097 parameters and raises the
compression ratio."""


class ConfigError(ValueError):
    """A parameter is outside what is allowed; the message names it."""


def check_writable(data_dir: str | os.PathLike) -> None:
    """Raise ConfigError unless data_dir can be created and written; leaves nothing behind."""
    path = Path(data_dir).absolute()
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            f"Data dir {path} cannot be created or written ({exc}); "
            "pass a writable folder as the data dir or fix its permissions."
        ) from exc
    finally:
        for folder in created:  # deepest first; rmdir only removes empty folders
            with contextlib.suppress(OSError):
                folder.rmdir()


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed} (got {value!r})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_positive(value: int | None) -> bool:
    return value is None or (_is_int(value) and value >= 1)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "conv"
    """"conv" (the exercise's conv autoencoder) or "linear" (bias-free PCA baseline)."""
    latent_dim: int = 100
    """Size of the code the encoder produces."""

    def __post_init__(self) -> None:
        _require(self.kind in MODEL_KINDS, "model kind", f"one of {sorted(MODEL_KINDS)}", self.kind)
        _require(
            _is_int(self.latent_dim) and self.latent_dim >= 1,
            "latent_dim",
            "a positive integer",
            self.latent_dim,
        )


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = "./data"
    """Folder holding (or receiving) MNIST under MNIST/raw."""
    train_limit: int | None = None
    """Use only the first N training images (None: all 60,000)."""
    test_limit: int | None = None
    """Use only the first N test images (None: all 10,000)."""

    def __post_init__(self) -> None:
        _require(bool(self.data_dir), "data_dir", "a folder path", self.data_dir)
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            _require(_optional_positive(value), name, "a positive integer or empty", value)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    """Full passes over the training set."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 128
    """Training mini-batch size."""
    seed: int = 0
    """Seed of the first initialisation and of the batch order; restarts use seed + k *
    10,000 (pipeline.train.RESTART_STRIDE), so seeds stay under 10,000."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu" or "cuda"."""
    max_restarts: int = 20
    """How many fresh initialisations (seed + 10,000, seed + 20,000, ...) to try after one
    fails the
    health check (pipeline/health.py). Each costs at most the 200-step window (a constant
    output ends it sooner), a few seconds; at d=3 most seeds collapse, hence the generous
    default."""

    def __post_init__(self) -> None:
        _require(
            _is_int(self.epochs) and self.epochs >= 1, "epochs", "an integer >= 1", self.epochs
        )
        _require(
            isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0,
            "lr",
            "a finite number > 0",
            self.lr,
        )
        _require(
            _is_int(self.batch_size) and self.batch_size >= 1,
            "batch_size",
            "an integer >= 1",
            self.batch_size,
        )
        _require(
            _is_int(self.seed) and 0 <= self.seed < MAX_SEED,
            "seed",
            f"an integer from 0 to {MAX_SEED - 1}",
            self.seed,
        )
        _require(self.device in DEVICES, "device", f"one of {list(DEVICES)}", self.device)
        _require(
            _is_int(self.max_restarts) and self.max_restarts >= 0,
            "max_restarts",
            "an integer >= 0",
            self.max_restarts,
        )


def parse_int_list(name: str, text: str, minimum: int, example: str) -> tuple[int, ...]:
    """Parse a comma-separated list of distinct integers >= minimum, such as "3,10,100"."""
    parts = [p.strip() for p in str(text).split(",")]
    if any(not p.isdigit() or int(p) < minimum for p in parts):
        kind = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise ConfigError(
            f"{name} must be a comma-separated list of {kind}, e.g. {example} (got {text!r})"
        )
    values = [int(p) for p in parts]
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(
            f"{name} must not repeat a value ({', '.join(map(str, repeated))} given twice "
            f"in {text!r})"
        )
    return tuple(values)


def parse_latent_dims(text: str) -> tuple[int, ...]:
    """Parse a comma-separated latent list such as "3,10,100,250"."""
    return parse_int_list("latent_dims", text, 1, "3,10,100,250")


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse a comma-separated seed list such as "0,1,2"."""
    seeds = parse_int_list("seeds", text, 0, "0,1,2")
    too_large = [s for s in seeds if s >= MAX_SEED]
    if too_large:
        raise ConfigError(f"seeds must be under {MAX_SEED} (got {too_large[0]})")
    return seeds


@dataclass(frozen=True)
class CompareConfig:
    margin: float = DEFAULT_MARGIN
    """The recommendation's tolerance: the smallest latent size whose test MSE is at most
    (1 + margin) times the best one is picked (default and why: DEFAULT_MARGIN)."""
    data_dir: str = "./data"
    """MNIST folder: test digits for the plots, and the PCA floors' cache."""

    def __post_init__(self) -> None:
        _require(
            isinstance(self.margin, (int, float)) and 0 <= self.margin < 10,
            "margin",
            "a number from 0 to 10 (0.1 means within 10% of the best)",
            self.margin,
        )
        _require(bool(self.data_dir), "data_dir", "a folder path", self.data_dir)
