import re
from dataclasses import fields

import pytest

from pipeline.config import (
    LATENT,
    MAX_IMAGE_SIZE,
    MAX_IMAGES,
    MAX_STEP_CPUS,
    MAX_STEP_GPUS,
    ClusterConfig,
    CompareConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    SweepConfig,
    TrainConfig,
    check_precision,
    from_params,
    to_params,
)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: ModelConfig(latent_dim=0), "latent_dim"),
        (lambda: ModelConfig(latent_dim=-3), "latent_dim"),
        (lambda: ModelConfig(latent_dim=2.5), "latent_dim"),
        (lambda: ModelConfig(kind="mlp"), "model kind"),
        (lambda: TrainConfig(epochs=0), "epochs"),
        (lambda: TrainConfig(lr=0), "lr"),
        (lambda: TrainConfig(lr=-1e-3), "lr"),
        (lambda: TrainConfig(lr=float("nan")), "lr"),
        (lambda: TrainConfig(lr=float("inf")), "lr"),
        (lambda: TrainConfig(batch_size=0), "batch_size"),
        (lambda: TrainConfig(seed=-1), "seed"),
        (lambda: TrainConfig(seed=10_000), "seed"),
        (lambda: TrainConfig(device="tpu"), "device"),
        (lambda: TrainConfig(precision="fp16"), "precision"),
        (lambda: TrainConfig(precision="tf32"), "precision"),
        (lambda: TrainConfig(max_restarts=-1), "max_restarts"),
        (lambda: DataConfig(train_limit=0), "train_limit"),
        (lambda: DataConfig(test_limit=-5), "test_limit"),
    ],
)
def test_bad_values_name_the_parameter_and_what_is_allowed(make, name):
    with pytest.raises(ConfigError) as info:
        make()
    message = str(info.value)
    assert message.startswith(name) and "must be" in message and "\n" not in message


def test_defaults_are_the_exercise_settings():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (10, 1e-3, 128)
    assert cfg.precision == "auto"  # fp32 but on a CPU with AMX: pipeline.training.hardware


def sweep(**params: str) -> SweepConfig:
    return from_params(SweepConfig, params)


@pytest.mark.parametrize("text", ["3,10,100,250", " 3, 10 ,100,250 "])
def test_latent_list_parses(text):
    assert sweep(latent_dims=text).latent_dims == (3, 10, 100, 250)


@pytest.mark.parametrize("text", ["", "3,,10", "3;10", "a,b", "3,0", "3,-1", "2.5"])
def test_unparsable_latent_list_is_rejected(text):
    with pytest.raises(ConfigError, match="latent_dims must be"):
        sweep(latent_dims=text)


def test_seed_list_parses_and_allows_zero():
    assert sweep(seeds="0").seeds == (0,) and sweep(seeds="0, 1,2").seeds == (0, 1, 2)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("seeds", "0,-1", "seeds must be a comma-separated list of integers from 0 to 9999"),
        ("seeds", "", "seeds must be a comma-separated list"),
        ("seeds", "0,1,1", "seeds must not repeat a value (1 given twice in '0,1,1')"),
        ("seeds", "0,10000", "seeds must be a comma-separated list of integers from 0 to 9999"),
        ("latent_dims", "3,3,10,10", "latent_dims must not repeat a value (3, 10 given"),
    ],
)
def test_bad_lists_are_named(name, text, message):
    with pytest.raises(ConfigError) as info:
        sweep(**{name: text})
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig("linear", 7),
        DataConfig("/tmp/x", train_limit=None, test_limit=50),
        TrainConfig(epochs=3, lr=0.0005, batch_size=64, seed=9, device="cpu", max_restarts=0),
        TrainConfig(precision="bf16"),
        SweepConfig((3, 10), 4, (0, 2), parallel=2, force=True),
        CompareConfig(margin=0.1, data_dir="d"),
    ],
)
def test_parameters_read_back_to_the_same_config(config):
    """What a run logs (to_params, as MLflow stores it: text) reads back unchanged."""
    params = {k: str(v) for k, v in to_params(config).items()}
    assert from_params(type(config), params) == config


def test_all_images_is_zero_as_a_parameter_and_none_inside():
    assert to_params(DataConfig())["train_limit"] == 0
    assert from_params(DataConfig, {"train_limit": "0"}).train_limit is None
    assert to_params(ModelConfig(), skip=("model_kind",)) == {"latent_dim": 100}


# Each numeric parameter's range: (config, parameter, lowest, highest); lr's lowest is
# excluded (None).
RANGES = [
    (ModelConfig, "latent_dim", 1, int(LATENT.high)),
    (TrainConfig, "epochs", 1, 1000),
    (TrainConfig, "lr", None, 10),
    (TrainConfig, "batch_size", 1, MAX_IMAGES),
    (TrainConfig, "seed", 0, 9999),
    (TrainConfig, "max_restarts", 0, 100),
    (DataConfig, "train_limit", 0, MAX_IMAGES),
    (DataConfig, "test_limit", 0, MAX_IMAGES),
    (DataConfig, "image_size", 0, MAX_IMAGE_SIZE),
    (DataConfig, "channels", 0, 3),
    (SweepConfig, "latent_dims", 1, int(LATENT.high)),
    (SweepConfig, "linear_dim", 1, int(LATENT.high)),
    (SweepConfig, "seeds", 0, 9999),
    (SweepConfig, "parallel", 1, 64),
    (CompareConfig, "margin", 0, 10),
    (CompareConfig, "psnr_target", None, 100),
    (ClusterConfig, "step_cpus", None, MAX_STEP_CPUS),
    (ClusterConfig, "step_gpus", 0, MAX_STEP_GPUS),
]


@pytest.mark.parametrize(("cls", "name", "low", "high"), RANGES)
def test_each_numeric_parameter_takes_its_range_and_refuses_what_is_outside(cls, name, low, high):
    def read(value: object):
        return from_params(cls, {name: str(value)})

    def back(value: object) -> float:
        return float(to_params(read(value))[name])

    assert back(high) == high
    if low is None:
        assert back(1e-9) == 1e-9
        outside = [0, -1, high * 1.01, float("inf"), float("nan")]
    else:
        assert back(low) == low
        outside = [low - 1, high + 1, 10**12]
    for value in outside:
        with pytest.raises(ConfigError) as info:
            read(value)
        message = str(info.value)
        high_text = f"{high:g}" if isinstance(high, float) else str(high)
        assert message.startswith(f"{name} must be ") and re.search(rf"\b{high_text}\b", message), (
            message
        )


@pytest.mark.parametrize(
    "cls", [ModelConfig, TrainConfig, DataConfig, SweepConfig, CompareConfig, ClusterConfig]
)
def test_every_numeric_field_has_a_range_holding_its_default(cls):
    cls()  # the defaults pass their own checks
    numeric = {f.name for f in fields(cls) if f.type in ("int", "float", "int | None")}
    numeric |= {f.name for f in fields(cls) if f.type == "tuple[int, ...]"}
    ranged = {f.name for f in fields(cls) if f.metadata["within"] is not None}
    assert ranged == numeric == {name for c, name, _, _ in RANGES if c is cls}


@pytest.mark.parametrize(
    ("device_type", "reason"),
    [
        ("cpu", "oneDNN has no bfloat16 kernels for this CPU"),
        ("cuda", "torch.cuda.is_bf16_supported() is False for this GPU"),
    ],
)
def test_bf16_is_refused_in_one_line_where_torch_reports_no_support(device_type, reason):
    with pytest.raises(ConfigError) as info:
        check_precision("bf16", device_type, bf16_supported=False)
    message = str(info.value)
    assert (
        message.startswith(f"precision must be auto or fp32 here: {reason}") and "\n" not in message
    )
    check_precision("bf16", device_type, bf16_supported=True)
    check_precision("fp32", device_type, bf16_supported=False)  # float32 runs anywhere
