"""Bad input: one line naming the parameter, a non-zero exit, and no work done."""

from dataclasses import fields

import pytest
import torch
import yaml

from pipeline.config import DEFAULT_LATENT, LATENT, ConfigError, allowed, param_name, to_param
from tests.tracking.conftest import REPO_ROOT, cli_flags, small_args
from tracking import names
from tracking.cli import COMMANDS, Registry, main

MAX = int(LATENT.high)  # of a latent size: the largest image's C*H*W
BAD_INPUT = [
    (["train", "--latent-dim", "0"], f"latent_dim must be an integer from 1 to {MAX} (got 0)"),
    (["train", "--latent-dim", "-3"], f"latent_dim must be an integer from 1 to {MAX}"),
    (["train", "--latent-dim", "785"], "latent_dim must be at most 784, the C*H*W of mnist's"),
    (
        ["train", "--latent-dim", "ten"],
        f"latent_dim must be an integer from 1 to {MAX} (got 'ten')",
    ),
    (["train", "--latent-dim", "2.5"], "latent_dim must be an integer"),
    (["train", "--epochs", "0"], "epochs must be an integer from 1 to 1000"),
    (["train", "--epochs", "1001"], "epochs must be an integer from 1 to 1000 (got 1001)"),
    (["train", "--lr", "0"], "lr must be a number over 0 and at most 10"),
    (["train", "--lr", "-0.1"], "lr must be a number over 0 and at most 10"),
    (["train", "--lr", "inf"], "lr must be a number over 0 and at most 10"),
    (["train", "--lr", "nan"], "lr must be a number over 0 and at most 10"),
    (["train", "--lr", "10.5"], "lr must be a number over 0 and at most 10"),
    (["train", "--lr", "fast"], "lr must be a number over 0 and at most 10 (got 'fast')"),
    (["train", "--batch-size", "0"], "batch_size must be an integer from 1 to 10000000"),
    (["train", "--seed", "10000"], "seed must be an integer from 0 to 9999"),
    (["train", "--max-restarts", "-1"], "max_restarts must be an integer from 0 to 100"),
    (["train", "--max-restarts", "101"], "max_restarts must be an integer from 0 to 100"),
    (["train", "--train-limit", "-1"], "train_limit must be an integer from 1 to 10000000, or 0"),
    (["train", "--test-limit", "x"], "test_limit must be an integer from 1 to 10000000, or 0 for"),
    (["train", "--dataset", "imagenet"], "dataset must be one of mnist, fashion-mnist, kmnist, "),
    (["train", "--dataset", " "], "dataset must be a dataset name or a folder"),
    (["train", "--dataset", "mnist", "--image-size", "32"], "image_size and channels apply to a"),
    (["train", "--dataset", "cifar10", "--channels", "1"], "image_size and channels apply to a"),
    (["train", "--image-size", "7"], "image_size must be an integer from 8 to 512, or 0 for"),
    (["train", "--image-size", "513"], "image_size must be an integer from 8 to 512, or 0 for"),
    (["train", "--channels", "2"], "channels must be 1 or 3, or 0 for auto (got 2)"),
    (["train", "--channels", "4"], "channels must be an integer from 1 to 3, or 0 for"),
    (["train", "--resume-run-id", "abc", "--dataset", "kmnist"], "resume_run_id continues run"),
    (
        ["train", "--model-kind", "linear", "--latent-dim", "3073", "--dataset", "cifar10"],
        "latent_dim must be at most 3072, the C*H*W of cifar10's images (got 3073)",
    ),
    (["train", "--device", "tpu"], "device must be one of"),
    (["train", "--registered-model", "a/b"], "registered_model must be a name without any of /"),
    (["train", "--precision", "fp16"], "precision must be one of ['auto', 'fp32', 'bf16']"),
    (["sweep", "--precision", "tf32"], "precision must be one of ['auto', 'fp32', 'bf16']"),
    (["sweep", "--latent-dims", "3,,10"], "latent_dims must be a comma-separated list"),
    (["sweep", "--latent-dims", "3,ten"], "latent_dims must be a comma-separated list"),
    (["sweep", "--latent-dims", "3,0"], "latent_dims must be a comma-separated list of integers"),
    (["sweep", "--latent-dims", "3,785"], "latent_dim must be at most 784, the C*H*W of mnist's"),
    (["sweep", "--latent-dims", "3,3"], "latent_dims must not repeat a value (3 given twice"),
    (["sweep", "--linear-dim", "785"], "latent_dim must be at most 784, the C*H*W of mnist's"),
    (["sweep", "--datasets", "mnist,fashion-mnist,mnist"], "datasets must not repeat a value"),
    (["sweep", "--datasets", "mnist,,cifar10"], "datasets must be a comma-separated list of"),
    (["sweep", "--datasets", "mnist,emnist"], "dataset must be one of mnist, fashion-mnist"),
    (
        ["sweep", "--datasets", "mnist,kmnist", "--registered-model", "x"],
        "registered_model names one",
    ),
    (["sweep", "--seeds", "0,x"], "seeds must be a comma-separated list of integers from 0 to"),
    (["sweep", "--seeds", "0,10000"], "seeds must be a comma-separated list of integers from 0"),
    (["sweep", "--seeds", "1,1"], "seeds must not repeat a value (1 given twice"),
    (["sweep", "--parallel", "0"], "parallel must be an integer from 1 to 64"),
    (["sweep", "--parallel", "65"], "parallel must be an integer from 1 to 64"),
    (["sweep", "--epochs", "-2"], "epochs must be an integer from 1 to 1000"),
    (["sweep", "--registered-model", "a:b"], "registered_model must be a name without any of /"),
    (["compare", "--margin", "10.5"], "margin must be a number from 0 to 10"),
    (["compare", "--margin", "-0.1"], "margin must be a number from 0 to 10"),
    (["compare", "--registered-model", ".."], "registered_model must be a name without any of /"),
]


if not torch.cuda.is_available():
    BAD_INPUT.append((["train", "--device", "cuda"], "device must be auto or cpu here"))


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_rejected_before_any_run(store, monkeypatch, capsys, args, message):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.chdir(store.root)
    assert main([*args, "--data-dir", str(store.root / "data")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + message), lines
    assert store.runs() == []
    assert not (store.root / "data").exists()


REFUSE_IN_A_FRESH_PROCESS = """
import sys
from tracking.cli import main
code = main(sys.argv[1:])
print(code, *[m for m in ("torch", "torchvision", "mlflow", "pandas") if m in sys.modules])
"""


@pytest.mark.parametrize(
    "args",
    [["train", "--lr", "inf"], ["sweep", "--latent-dims", "3,3"], ["compare", "--margin", "x"]],
)
def test_a_refusal_imports_neither_torch_nor_mlflow(store, args):
    """Checking the arguments needs neither (they take seconds to import): refusals are
    immediate. `compare`'s checks against the store come after its argument checks."""
    result = store.python(REFUSE_IN_A_FRESH_PROCESS, *args)
    assert result.stdout.split() == ["2"], result.stdout + result.stderr[-2000:]
    assert result.stderr.startswith("error: ")


def test_unwritable_data_dir_is_rejected_with_a_non_zero_exit(store):
    blocker = store.root / "a-file"
    blocker.write_text("not a folder")
    result = store.cli("train", "--data-dir", str(blocker / "data"))
    assert result.returncode == 2
    assert "cannot be created or written" in result.stderr
    assert store.runs() == []


# Once let through: a whole run trained before MLflow refused the name; an 82 GB
# allocation failed with a traceback; training for ever.
UNDER_MLFLOW_RUN = [
    ({"registered_model": "a/b"}, "registered_model must be a name without any of / :"),
    ({"latent_dim": 10_000_000}, f"latent_dim must be an integer from 1 to {MAX} (got 10000000)"),
    ({"epochs": 10_000_000_000}, "epochs must be an integer from 1 to 1000 (got 10000000000)"),
]


def test_bf16_on_a_cpu_without_bfloat16_kernels_is_refused_before_any_run(store):
    """oneDNN held to AVX2 (as on an AVX2 host) has no bfloat16 kernels: what torch reports
    then refuses bf16, in one line, with exit 2; float32 is not refused."""
    store.env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    for command in ("train", "sweep"):
        result = store.cli(command, "--precision", "bf16", "--device", "cpu")
        assert result.returncode == 2, result.stdout + result.stderr[-2000:]
        assert result.stderr.splitlines() == [
            "error: precision must be auto or fp32 here: oneDNN has no bfloat16 kernels for this "
            "CPU (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False; it needs AVX-512 or AMX)"
        ]
    assert store.runs() == []
    assert not (store.root / "data").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("params", "message"), UNDER_MLFLOW_RUN)
def test_bad_input_under_mlflow_run_ends_that_run_failed(store, mnist_dir, params, message):
    """Our command exits 2 with one error line; `mlflow run` then exits 1, as it does for
    every failed run, and its run ends FAILED with that line, before any work."""
    args = small_args(mnist_dir, **{"epochs": 1, **params})
    direct = store.cli("train", *cli_flags(args))
    lines = direct.stderr.splitlines()
    assert direct.returncode == 2 and len(lines) == 1, direct.stderr[-2000:]
    assert lines[0].startswith(f"error: {message}") and store.runs() == []
    result = store.mlflow_run("train", **args)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (run,) = store.runs()  # the one `mlflow run` made; our own refusal made none
    assert run.info.status == "FAILED"
    assert run.data.tags[names.TAG_FAILURE].startswith(message)
    assert run.data.metrics == {}  # nothing trained, not even a system-metrics sample
    assert store.client.search_registered_models() == []


# MLproject's entry points: the command each runs, and the parameters its command fixes.
ENTRY_POINTS = {
    "train": ("train", {"model_kind": "conv"}),
    "train_linear": ("train", {"model_kind": "linear"}),
    "main": ("sweep", {}),
    "compare": ("compare", {}),
}
MLPROJECT_TYPES = {"int": "int", "float": "float", "str": "string", "bool": "string"}


def schema_parameters(command: str, fixed: dict) -> dict[str, tuple[str, str]]:
    """An entry point's parameters as the command's schema defines them: name -> (MLproject
    type, default as text)."""
    found = {}
    for schema in COMMANDS[command].schema:
        for f in fields(schema):
            name = param_name(f)
            if name in fixed or name in COMMANDS[command].skip:
                continue
            kind = "int" if f.type == "int | None" else MLPROJECT_TYPES.get(f.type, "string")
            default = DEFAULT_LATENT[fixed["model_kind"]] if name == "latent_dim" else f.default
            found[name] = (kind, str(to_param(default)))
    return found


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_mlproject_parameters_are_the_schema(entry_point):
    """Each entry point declares exactly its command's schema fields, with their types and
    defaults, and passes every one to the command as its flag."""
    spec = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"][entry_point]
    command, fixed = ENTRY_POINTS[entry_point]
    declared = {
        name: (p["type"], str(to_param(p["default"])) if p["type"] != "float" else p["default"])
        for name, p in spec["parameters"].items()
    }
    expected = schema_parameters(command, fixed)
    for name, (kind, default) in expected.items():
        if kind == "float":  # 0.001 and 1e-3 are the same default
            expected[name] = (kind, float(default))
    assert declared == expected
    words = spec["command"].split()
    assert words[:5] == ["exec", "python", "-m", "tracking.cli", command]
    flags = dict(zip(words[5::2], words[6::2], strict=True))
    passed = {f"--{n.replace('_', '-')}": f"{{{n}}}" for n in expected}
    passed.update({f"--{n.replace('_', '-')}": value for n, value in fixed.items()})
    assert flags == passed


@pytest.mark.parametrize(
    "name",
    ["mnist-autoencoder", "a b", "a@b", "ü-1", ".a", "a/b", "a:b", "a%b", "a\\b", "a?b", ".", ".."],
)
def test_registered_model_names_accepted_are_those_mlflows_registry_accepts(name):
    """What Registry lets through, MLflow's registries (database and file) take; what
    they refuse, it refuses before any work. It also refuses \\ and ? (see NOT_IN_NAMES)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.model_registry.file_store import _validate_model_name as file_rule
    from mlflow.utils.validation import _validate_model_name as database_rule

    def mlflow_accepts() -> bool:
        try:
            database_rule(name)
            file_rule(name)
        except MlflowException:
            return False
        return True

    try:
        Registry(name)
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == (mlflow_accepts() and not set(name) & set("\\?"))


@pytest.mark.parametrize("command", COMMANDS)
def test_the_help_states_each_numeric_parameters_range(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no word is broken
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    ranged = [f for cls in COMMANDS[command].schema for f in fields(cls) if f.metadata["within"]]
    for f in ranged:
        if param_name(f) not in COMMANDS[command].skip:
            assert f"({allowed(f)}; default: {to_param(f.default)})" in text, f.name
