"""The one schema of the project's parameters: a frozen dataclass per concern, each field
with its default and help text. The command line's flags, the parameters runs log and
reading them back (``to_params``, ``from_params``) all come from here. Each dataclass
checks its fields and raises ``ConfigError`` with a one-line message naming the parameter
and what is allowed. Imports neither torch nor MLflow: refusals come at once.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

MODEL_KINDS = ("conv", "linear")  # pipeline.training.models builds each
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: pipeline.training.hardware.auto_precision
BACKENDS = ("local", "ray")  # where a sweep's steps run: tracking.backends
MAX_STEP_CPUS, MAX_STEP_GPUS = 1024, 64  # of one step on a Ray cluster
DEFAULT_LATENT = {"conv": 100, "linear": 10}
PIXELS = 28 * 28
"""Of an MNIST image; also the largest latent size: a bigger code compresses nothing."""
SPLIT_SIZES = {"train": 60_000, "test": 10_000}
MAX_IMAGES = 10_000_000
"""The most images a split's limit may name; a limit over a split's size keeps it whole."""
DEFAULT_DATASET = "mnist"
CHANNELS = (1, 3)
MAX_IMAGE_SIZE = 512
"""The largest image_size: the conv model's flatten layer grows with its square."""
MAX_SEED = 10_000
"""Seeds are under this; restart k of seed s uses seed s + k * MAX_SEED
(pipeline.training.restarts.RESTART_STRIDE), so that no restart lands on another run's seed."""
DEFAULT_MARGIN = round(10 ** (1 / 10) - 1, 4)
"""Default of the recommendation's margin, 0.2589: an MSE that much above the best is
1 dB of PSNR, about the smallest difference one sees between two reconstructions side by
side, while every latent unit the conv model drops saves 4,097 parameters and raises the
compression ratio."""
DEFAULT_PSNR_TARGET = 20.0
"""Default of compare's psnr_target: 20 dB is an MSE of 0.01, an RMS error of a tenth of
the pixel range, the usual lower end of acceptable lossy image quality. MNIST's default
study crosses it between d = 10 (test MSE 0.01287, 18.9 dB) and d = 100 (0.00185, 27.3 dB),
so it separates a code that blurs the images from one that keeps them."""
ALL_IMAGES = 0
"""How parameters (the command line, MLflow's params) spell a limit of None: all images."""


class ConfigError(ValueError):
    """A parameter is outside what is allowed; the message names it."""


class TrainingFailed(RuntimeError):
    """An allowed configuration that training showed cannot work (pipeline.training.train's
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


@dataclass(frozen=True)
class Range:
    """The values a numeric parameter allows: integers (or, if real, any numbers) from
    low to high, low itself excluded if low_open. `zero` says what 0 means for a field whose
    None (all images) the parameter spells 0."""

    low: float
    high: float
    real: bool = False
    low_open: bool = False
    zero: str = ""

    def holds(self, value: object) -> bool:
        kinds = (int, float) if self.real else int
        if isinstance(value, bool) or not isinstance(value, kinds):
            return False
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def words(self, plural: bool = False) -> str:
        """'an integer from 1 to 1000', or its plural 'integers from 1 to 1000'."""
        kind = (("a number", "numbers") if self.real else ("an integer", "integers"))[plural]
        low, high = (f"{v:g}" if self.real else str(int(v)) for v in (self.low, self.high))
        low = f"over {low} and at most" if self.low_open else f"from {low} to"
        text = f"{kind} {low} {high}"
        return f"{text}, or 0 for {self.zero}" if self.zero else text


def option(
    default: object, help: str, *, param: str | None = None, within: Range | None = None
) -> Field:
    """A field of the schema: its default, its help text, the name of its parameter
    where that differs from the field's, and the range of a numeric one."""
    return field(default=default, metadata={"help": help, "param": param, "within": within})


def param_name(f: Field) -> str:
    return f.metadata.get("param") or f.name


KINDS = {
    "int": "an integer",
    "float": "a number",
    "str": "text",
    "bool": "true or false",
    "tuple[str, ...]": "a comma-separated list of dataset names or folders",
}


def allowed(f: Field) -> str:
    """What a field allows, in words: its range, or else its kind."""
    within: Range | None = f.metadata.get("within")
    if within is None:
        return KINDS[f.type]
    if f.type == "tuple[int, ...]":
        return f"a comma-separated list of {within.words(plural=True)}"
    return within.words()


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


def _flag(text: str) -> bool:
    value = text.lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return value in ("true", "1", "yes")


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names or paths ("mnist,fashion-mnist"); none empty."""
    parts = tuple(p.strip() for p in text.split(","))
    if not all(parts):
        raise ValueError(text)
    return parts


def _integers(text: str) -> tuple[int, ...]:
    """A comma-separated list of whole numbers ("3,10,100"); the field checks the rest."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ValueError(text)
    return tuple(int(p) for p in parts)


# How each annotation is read from a parameter's text (ValueError if it cannot be).
PARSERS = {
    "int": int,
    "float": float,
    "str": str,
    "bool": _flag,
    "int | None": lambda text: int(text) or None,  # 0: all images
    "tuple[int, ...]": _integers,
    "tuple[str, ...]": _names,
}


def from_params(cls: type, params: Mapping[str, object]):
    """An instance of cls from parameters as text (the command line, a run's params):
    each present field parsed by its type, the others at their defaults."""
    values = {}
    for f in fields(cls):
        if params.get(name := param_name(f)) is not None:
            text = str(params[name]).strip()
            try:
                values[f.name] = PARSERS[f.type](text)
            except ValueError:
                raise ConfigError(f"{name} must be {allowed(f)} (got {text!r})") from None
    return cls(**values)


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed} (got {value!r})")


def _check_ranges(config: object) -> None:
    """ConfigError unless every field with a range holds a value in it (each item of a
    list; None where 0 means all images)."""
    for f in fields(config):
        within, value = f.metadata.get("within"), getattr(config, f.name)
        if within is None or (value is None and within.zero):
            continue
        items = value if isinstance(value, tuple) else (value,)
        ok = bool(items) and all(within.holds(v) for v in items)
        _require(ok, param_name(f), allowed(f), to_param(value))


LATENT = Range(1, 3 * MAX_IMAGE_SIZE**2)
"""Up to the largest image's C*H*W; a code bigger than the data's own C*H*W compresses
nothing and is refused once the data is known (the command line checks it)."""


@dataclass(frozen=True)
class ModelConfig:
    kind: str = option(
        "conv", "conv (the exercise's conv autoencoder) or linear (PCA-like)", param="model_kind"
    )
    latent_dim: int = option(
        DEFAULT_LATENT["conv"], "size of the code the encoder produces", within=LATENT
    )

    def __post_init__(self) -> None:
        _require(self.kind in MODEL_KINDS, "model kind", f"one of {sorted(MODEL_KINDS)}", self.kind)
        _check_ranges(self)


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = option(
        "./data", "folder holding (or receiving) the datasets' files and decoded folders"
    )
    dataset: str = option(
        DEFAULT_DATASET,
        "mnist, fashion-mnist, kmnist, cifar10, or a folder of images (a path: class "
        "subfolders are labels, train/ and test/ subfolders the split)",
    )
    train_limit: int | None = option(
        None, "use the first N training images", within=Range(1, MAX_IMAGES, zero="all images")
    )
    test_limit: int | None = option(
        None, "use the first N test images", within=Range(1, MAX_IMAGES, zero="all images")
    )
    image_size: int | None = option(
        None,
        "a folder's images resized to this height and width",
        within=Range(8, MAX_IMAGE_SIZE, zero="their own size (all must share it)"),
    )
    channels: int | None = option(
        None,
        "a folder's images as 1 (greyscale) or 3 (RGB) channels",
        within=Range(1, 3, zero="1 where every image is greyscale, else 3"),
    )

    def __post_init__(self) -> None:
        _require(bool(self.data_dir), "data_dir", "a folder path", self.data_dir)
        _require(bool(self.dataset.strip()), "dataset", "a dataset name or a folder", self.dataset)
        _check_ranges(self)
        if self.channels is not None:
            _require(self.channels in CHANNELS, "channels", "1 or 3, or 0 for auto", self.channels)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(10, "full passes over the training set", within=Range(1, 1000))
    lr: float = option(1e-3, "Adam learning rate", within=Range(0, 10, real=True, low_open=True))
    batch_size: int = option(128, "training mini-batch size", within=Range(1, MAX_IMAGES))
    seed: int = option(
        0,
        f"seed of the first initialisation and of the batch order; restart k uses "
        f"seed + {MAX_SEED} k",
        within=Range(0, MAX_SEED - 1),
    )
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    precision: str = option(
        "auto",
        "auto (bf16 on a CPU with AMX, else fp32), fp32, or bf16: the training forward under "
        "bfloat16 autocast (weights, Adam and the loss stay float32; every recorded "
        "evaluation is float32)",
    )
    cuda_graphs: bool = option(
        True,
        "on CUDA: replay each full batch's training step from one captured CUDA graph (false: "
        "launch its kernels one by one); no effect on the CPU",
    )
    deterministic: bool = option(
        True,
        "on CUDA: deterministic cuDNN and cuBLAS kernels, so that the same seed gives the same "
        "bits (false: cuDNN may pick faster nondeterministic ones); the CPU is deterministic "
        "either way",
    )
    max_restarts: int = option(
        20,
        f"fresh initialisations (seed + {MAX_SEED} k) tried after one fails the health check; "
        "each costs 200 steps; from the exercise's initialisation most seeds fail at d=3: hence "
        "the default",
        within=Range(0, 100),
    )

    def __post_init__(self) -> None:
        _check_ranges(self)
        _require(self.device in DEVICES, "device", f"one of {list(DEVICES)}", self.device)
        allowed = f"one of {list(PRECISIONS)}"
        _require(self.precision in PRECISIONS, "precision", allowed, self.precision)


def check_precision(precision: str, device_type: str, bf16_supported: bool) -> None:
    """ConfigError if bf16 is asked for on a device that lacks it; bf16_supported is what
    torch reports for the device (pipeline.training.hardware.bf16_supported)."""
    if precision == "bf16" and not bf16_supported:
        how = {
            "cuda": "torch.cuda.is_bf16_supported() is False for this GPU",
            "cpu": "oneDNN has no bfloat16 kernels for this CPU "
            "(torch.ops.mkldnn._is_mkldnn_bf16_supported() is False; it needs AVX-512 or AMX)",
        }.get(device_type, f"torch reports no bfloat16 support on {device_type}")
        raise ConfigError(f"precision must be auto or fp32 here: {how}")


@dataclass(frozen=True)
class SweepConfig:
    latent_dims: tuple[int, ...] = option(
        (3, 10, 100, 250), "the conv models' latent sizes, e.g. 3,10,100,250", within=LATENT
    )
    linear_dim: int = option(
        DEFAULT_LATENT["linear"], "the linear baseline's latent size", within=LATENT
    )
    seeds: tuple[int, ...] = option(
        (0,),
        "seeds to train every configuration from, e.g. 0,1,2: a child run each",
        within=Range(0, MAX_SEED - 1),
    )
    parallel: int = option(1, "training steps run at once", within=Range(1, 64))
    force: bool = option(False, "train every step again instead of reusing FINISHED runs")
    datasets: tuple[str, ...] = option(
        (DEFAULT_DATASET,),
        "datasets to study, each a name or a folder (see dataset), e.g. mnist,fashion-mnist: "
        "every configuration and seed on each",
    )

    def __post_init__(self) -> None:
        _check_ranges(self)
        for name in ("datasets", "latent_dims", "seeds"):
            values = getattr(self, name)
            if repeated := sorted({v for v in values if values.count(v) > 1}):
                raise ConfigError(
                    f"{name} must not repeat a value ({', '.join(map(str, repeated))} given "
                    f"twice in {to_param(values)!r})"
                )


@dataclass(frozen=True)
class CompareConfig:
    margin: float = option(
        DEFAULT_MARGIN,
        "pick the smallest latent size whose mean test MSE is at most (1 + margin) times "
        "the best one (0.1: within 10%; the default is 1 dB of PSNR)",
        within=Range(0, 10, real=True),
    )
    data_dir: str = option(
        "./data", "the datasets' folder: test images for the plots, the PCA floors' cache"
    )
    psnr_target: float = option(
        DEFAULT_PSNR_TARGET,
        "the cross-dataset table gives each dataset's smallest latent size whose mean test "
        "PSNR reaches this many dB (the default, 20 dB, is an RMS error of a tenth of the "
        "pixel range)",
        within=Range(0, 100, real=True, low_open=True),
    )

    def __post_init__(self) -> None:
        _check_ranges(self)
        _require(bool(self.data_dir), "data_dir", "a folder path", self.data_dir)


@dataclass(frozen=True)
class ClusterConfig:
    """Where a sweep's training steps run, and what each asks for there."""

    backend: str = option(
        "local",
        "local (this machine: in this process, or `parallel` processes) or ray (each step "
        "a task on a Ray cluster)",
    )
    ray_address: str = option(
        "",
        "with backend=ray: the cluster (host:port, ray://host:port or auto); empty: "
        "RAY_ADDRESS, else a new single-node cluster on this machine",
    )
    step_cpus: float = option(
        1.0,
        "with backend=ray: CPUs per step (torch's threads)",
        within=Range(0, MAX_STEP_CPUS, real=True, low_open=True),
    )
    step_gpus: float = option(
        0.0,
        "with backend=ray: GPUs per step (0.5: two steps share one)",
        within=Range(0, MAX_STEP_GPUS, real=True),
    )

    def __post_init__(self) -> None:
        _check_ranges(self)
        _require(self.backend in BACKENDS, "backend", f"one of {list(BACKENDS)}", self.backend)
        if self.backend != "ray" and self.ray_address.strip():
            raise ConfigError("ray_address needs backend=ray (got backend=local)")

    @property
    def address(self) -> str | None:
        """The cluster to join, by Ray's convention: the parameter, else RAY_ADDRESS;
        None starts a new cluster on this machine."""
        return self.ray_address.strip() or os.environ.get("RAY_ADDRESS", "").strip() or None
