"""Bad input: one line naming the parameter, a non-zero exit, and no work done."""

from dataclasses import fields

import pytest
import torch
import yaml

from pipeline.config import DEFAULT_LATENT, param_name, to_param
from tests.tracking.conftest import REPO_ROOT, small_args
from tracking import names
from tracking.cli import COMMANDS, main

BAD_INPUT = [
    (["train", "--latent-dim", "0"], "latent_dim must be a positive integer"),
    (["train", "--latent-dim", "-3"], "latent_dim must be a positive integer"),
    (["train", "--latent-dim", "ten"], "latent_dim must be an integer"),
    (["train", "--latent-dim", "2.5"], "latent_dim must be an integer"),
    (["train", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["train", "--lr", "0"], "lr must be a finite number > 0"),
    (["train", "--lr", "-0.1"], "lr must be a finite number > 0"),
    (["train", "--lr", "inf"], "lr must be a finite number > 0"),
    (["train", "--lr", "fast"], "lr must be a number"),
    (["train", "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["train", "--train-limit", "-1"], "train_limit must be 0"),
    (["train", "--device", "tpu"], "device must be one of"),
    (["train", "--precision", "fp16"], "precision must be one of ['fp32', 'bf16']"),
    (["sweep", "--precision", "auto"], "precision must be one of ['fp32', 'bf16']"),
    (["sweep", "--latent-dims", "3,,10"], "latent_dims must be a comma-separated list"),
    (["sweep", "--latent-dims", "3,ten"], "latent_dims must be a comma-separated list"),
    (["sweep", "--latent-dims", "3,3"], "latent_dims must not repeat a value (3 given twice"),
    (["sweep", "--seeds", "0,x"], "seeds must be a comma-separated list of integers >= 0"),
    (["sweep", "--seeds", "1,1"], "seeds must not repeat a value (1 given twice"),
    (["sweep", "--epochs", "-2"], "epochs must be an integer >= 1"),
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


def test_bf16_on_a_cpu_without_bfloat16_kernels_is_refused_before_any_run(store):
    """oneDNN held to AVX2 (as on an AVX2 host) has no bfloat16 kernels: what torch reports
    then refuses bf16, in one line, with exit 2; float32 is not refused."""
    store.env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    for command in ("train", "sweep"):
        result = store.cli(command, "--precision", "bf16", "--device", "cpu")
        assert result.returncode == 2, result.stdout + result.stderr[-2000:]
        assert result.stderr.splitlines() == [
            "error: precision must be fp32 here: oneDNN has no bfloat16 kernels for this CPU "
            "(torch.ops.mkldnn._is_mkldnn_bf16_supported() is False; it needs AVX-512 or AMX)"
        ]
    assert store.runs() == []
    assert not (store.root / "data").exists()


@pytest.mark.slow
def test_bad_input_under_mlflow_run_ends_that_run_failed(store, mnist_dir):
    result = store.mlflow_run("train", **small_args(mnist_dir, latent_dim=0))
    assert result.returncode != 0
    (run,) = store.runs()
    assert run.info.status == "FAILED"
    assert "latent_dim must be a positive integer" in run.data.tags[names.TAG_FAILURE]
    assert names.TEST_MSE not in run.data.metrics  # no training happened


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
