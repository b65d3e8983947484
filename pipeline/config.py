"""The one schema of the project's parameters: a frozen dataclass per concern, each field
with its default and help text. The command line's flags, the parameters runs log and
reading them back (``to_params``, ``from_params``) all come from here. Each dataclass
checks its fields and raises ``ConfigError`` with a one-line message naming the parameter
and what is allowed. Imports neither torch nor MLflow: refusals come at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

MODEL_KINDS = ("conv", "linear")  # pipeline.models builds each
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
DEFAULT_LATENT = {"conv": 100, "linear": 10}
MAX_SEED = 10_000
"""Seeds are under this; restart k of seed s uses seed s + k * MAX_SEED
(pipeline.train.RESTART_STRIDE), so that no restart lands on another run's seed."""
DEFAULT_MARGIN = round(10 ** (1 / 10) - 1, 4)
"""Default of the recommendation's margin, 0.2589: an MSE that much above the best is
1 dB of PSNR, about the smallest difference one sees between two reconstructions side by
side, while every latent unit the conv model drops saves 4,097 parameters and raises the
compression ratio."""
ALL_IMAGES = 0
"""How parameters (the command line, MLflow's params) spell a limit of None: all images."""


class ConfigError(ValueError):
    """A parameter is outside what is allowed; the message names it."""


class TrainingFailed(RuntimeError):
    """An allowed configuration that training showed cannot work (pipeline.train's
    errors); the message says why and what to change. Continuing the run from its last
    checkpoint would fail alike."""


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


def one_line(exc: BaseException, limit: int = 4000) -> str:
    """An exception as one line: its type and its message, white space folded."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:limit]}"


def option(default: object, help: str, *, param: str | None = None) -> Field:
    """A field of the schema: its default, its help text, and the name of its parameter
    where that differs from the field's."""
    return field(default=default, metadata={"help": help, "param": param})


def param_name(f: Field) -> str:
    return f.metadata.get("param") or f.name


def to_param(value: object) -> object:
    """A field's value as a parameter: None (all images) as 0, lists comma-joined, flags
    as true/false."""
    if value is None:
        return ALL_IMAGES
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return value


def to_params(*configs: object, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """The configs' fields as parameters, by parameter name."""
    return {
        param_name(f): to_param(getattr(c, f.name))
        for c in configs
        for f in fields(c)
        if param_name(f) not in skip
    }


def _cast(cast: type, what: str):
    def parse(name: str, text: str):
        try:
            return cast(text)
        except ValueError:
            raise ConfigError(f"{name} must be {what} (got {text!r})") from None

    return parse


_integer, _number = _cast(int, "an integer"), _cast(float, "a number")


def _limit(name: str, text: str) -> int | None:
    value = _integer(name, text)
    if value < 0:
        raise ConfigError(f"{name} must be 0 (all images) or a positive integer (got {text!r})")
    return value or None


def _flag(name: str, text: str) -> bool:
    value = text.lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name} must be true or false (got {text!r})")
    return value in ("true", "1", "yes")


def _integers(name: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers ("3,10,100"); the field checks the rest."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"{name} must be {ALLOWED[name]} (got {text!r})")
    return tuple(int(p) for p in parts)


# How each annotation is read from a parameter's text.
PARSERS = {
    "int": _integer,
    "float": _number,
    "str": lambda name, text: text,
    "bool": _flag,
    "int | None": _limit,
    "tuple[int, ...]": _integers,
}


def from_params(cls: type, params: Mapping[str, object]):
    """An instance of cls from parameters as text (the command line, a run's params):
    each present field parsed by its type, the others at their defaults."""
    values = {}
    for f in fields(cls):
        if params.get(name := param_name(f)) is not None:
            values[f.name] = PARSERS[f.type](name, str(params[name]).strip())
    return cls(**values)


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed} (got {value!r})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(value: object, minimum: int) -> bool:
    return _is_int(value) and value >= minimum


@dataclass(frozen=True)
class ModelConfig:
    kind: str = option(
        "conv", "conv (the exercise's conv autoencoder) or linear (PCA-like)", param="model_kind"
    )
    latent_dim: int = option(DEFAULT_LATENT["conv"], "size of the code the encoder produces")

    def __post_init__(self) -> None:
        _require(self.kind in MODEL_KINDS, "model kind", f"one of {sorted(MODEL_KINDS)}", self.kind)
        _require(_at_least(self.latent_dim, 1), "latent_dim", "a positive integer", self.latent_dim)


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = option("./data", "folder holding (or receiving) MNIST under MNIST/raw")
    train_limit: int | None = option(None, "use the first N training images (0: all 60,000)")
    test_limit: int | None = option(None, "use the first N test images (0: all 10,000)")

    def __post_init__(self) -> None:
        _require(bool(self.data_dir), "data_dir", "a folder path", self.data_dir)
        for name in ("train_limit", "test_limit"):
            value = getattr(self, name)
            _require(
                value is None or _at_least(value, 1), name, "a positive integer or empty", value
            )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(10, "full passes over the training set")
    lr: float = option(1e-3, "Adam learning rate")
    batch_size: int = option(128, "training mini-batch size")
    seed: int = option(
        0,
        f"seed of the first initialisation and of the batch order, under {MAX_SEED}; "
        f"restarts use seed + {MAX_SEED} k",
    )
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    precision: str = option(
        "fp32",
        "fp32, or bf16: the training forward under bfloat16 autocast (weights, Adam and the "
        "loss stay float32; every recorded evaluation is float32)",
    )
    max_restarts: int = option(
        20,
        "fresh initialisations (seed + 10000 k) tried after one fails the health check; "
        "each costs 200 steps; from the exercise's initialisation most seeds fail at d=3: hence "
        "the default",
    )

    def __post_init__(self) -> None:
        _require(_at_least(self.epochs, 1), "epochs", "an integer >= 1", self.epochs)
        finite = isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0
        _require(finite, "lr", "a finite number > 0", self.lr)
        _require(_at_least(self.batch_size, 1), "batch_size", "an integer >= 1", self.batch_size)
        seed_ok = _at_least(self.seed, 0) and self.seed < MAX_SEED
        _require(seed_ok, "seed", f"an integer from 0 to {MAX_SEED - 1}", self.seed)
        _require(self.device in DEVICES, "device", f"one of {list(DEVICES)}", self.device)
        allowed = f"one of {list(PRECISIONS)}"
        _require(self.precision in PRECISIONS, "precision", allowed, self.precision)
        restarts_ok = _at_least(self.max_restarts, 0)
        _require(restarts_ok, "max_restarts", "an integer >= 0", self.max_restarts)


def check_precision(precision: str, device_type: str, bf16_supported: bool) -> None:
    """ConfigError if bf16 is asked for on a device that lacks it; bf16_supported is what
    torch reports for the device (pipeline.tensors.bf16_supported)."""
    if precision == "bf16" and not bf16_supported:
        how = {
            "cuda": "torch.cuda.is_bf16_supported() is False for this GPU",
            "cpu": "oneDNN has no bfloat16 kernels for this CPU "
            "(torch.ops.mkldnn._is_mkldnn_bf16_supported() is False; it needs AVX-512 or AMX)",
        }.get(device_type, f"torch reports no bfloat16 support on {device_type}")
        raise ConfigError(f"precision must be fp32 here: {how}")


ALLOWED = {
    "latent_dims": "a comma-separated list of positive integers, e.g. 3,10,100,250",
    "seeds": "a comma-separated list of integers >= 0, e.g. 0,1,2",
}


@dataclass(frozen=True)
class SweepConfig:
    latent_dims: tuple[int, ...] = option((3, 10, 100, 250), "the conv models' latent sizes")
    linear_dim: int = option(DEFAULT_LATENT["linear"], "the linear baseline's latent size")
    seeds: tuple[int, ...] = option(
        (0,), "seeds to train every configuration from, e.g. 0,1,2: a child run each"
    )
    parallel: int = option(1, "training steps run at once")
    force: bool = option(False, "train every step again instead of reusing FINISHED runs")

    def __post_init__(self) -> None:
        for name in ("latent_dims", "seeds"):
            values = getattr(self, name)
            minimum = 1 if name == "latent_dims" else 0
            ok = bool(values) and all(_at_least(v, minimum) for v in values)
            _require(ok, name, ALLOWED[name], to_param(values))
            if repeated := sorted({v for v in values if values.count(v) > 1}):
                raise ConfigError(
                    f"{name} must not repeat a value ({', '.join(map(str, repeated))} given "
                    f"twice in {to_param(values)!r})"
                )
        if max(self.seeds) >= MAX_SEED:
            raise ConfigError(f"seeds must be under {MAX_SEED} (got {max(self.seeds)})")
        _require(_at_least(self.linear_dim, 1), "linear_dim", "a positive integer", self.linear_dim)
        _require(_at_least(self.parallel, 1), "parallel", "a positive integer", self.parallel)


@dataclass(frozen=True)
class CompareConfig:
    margin: float = option(
        DEFAULT_MARGIN,
        "pick the smallest latent size whose mean test MSE is at most (1 + margin) times "
        "the best one (the default is 1 dB of PSNR)",
    )
    data_dir: str = option("./data", "MNIST folder: test digits for the plots, PCA floors' cache")

    def __post_init__(self) -> None:
        ok = isinstance(self.margin, (int, float)) and 0 <= self.margin < 10
        allowed = "a number from 0 to 10 (0.1 means within 10% of the best)"
        _require(ok, "margin", allowed, self.margin)
        _require(bool(self.data_dir), "data_dir", "a folder path", self.data_dir)
