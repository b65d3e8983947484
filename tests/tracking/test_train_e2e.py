"""The `train` and `main` entry points through `mlflow run`, into a temporary SQLite store."""

import json
import os
import signal
import time

import mlflow
import pytest
import torch

from pipeline.training.hardware import auto_precision, bf16_supported
from tests.tracking.conftest import (
    cli_command,
    cli_flags,
    make_store,
    mlflow_command,
    small_args,
)
from tracking import names
from tracking.registry import PICKLE_NOTE

pytestmark = pytest.mark.slow

EPOCHS = 3
LOAD_AND_SCORE = """
import json, sys, inspect
import mlflow, torch, torch.nn.functional as F
from torchvision.datasets import MNIST
model = mlflow.pytorch.load_model(sys.argv[1], map_location="cpu")
test = MNIST(sys.argv[2], train=False, download=False)
x = test.data[: int(sys.argv[3])].unsqueeze(1).float() / 255
with torch.inference_mode():
    mse = F.mse_loss(model(x), x, reduction="sum").double().item() / x.numel()
    code = model.encode(x[:4])
print(json.dumps({"mse": mse, "code": list(code.shape), "module": inspect.getfile(type(model))}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """One conv run through `mlflow run . -e train`, shared by the checks below."""
    store = make_store(tmp_path_factory.mktemp("train-store"))
    store.env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"  # samples in a short run
    result = store.mlflow_run(
        "train",
        **small_args(mnist_dir, latent_dim=10, epochs=EPOCHS, train_limit=2048, test_limit=512),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = store.runs()
    return store, run, result


def test_run_is_finished_and_named(trained):
    _, run, _ = trained
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "conv-d10-s0"
    tags = run.data.tags
    assert (tags[names.TAG_KIND], tags[names.TAG_LATENT]) == ("conv", "10")
    assert tags[names.TAG_CODE_VERSION]
    assert tags[names.TAG_HOST_ISA] == torch.backends.cpu.get_cpu_capability()
    assert tags[names.TAG_HOST_THREADS] == str(torch.get_num_threads())
    assert tags[names.TAG_TORCH_VERSION] == torch.__version__
    assert tags[names.TAG_MLFLOW_VERSION] == mlflow.__version__
    assert tags[names.TAG_HOST_CPU] and tags[names.TAG_HOST_GPU] == "none"


def test_params_record_the_configuration(trained):
    _, run, _ = trained
    params = run.data.params
    expected = {
        "model_kind": "conv",
        "latent_dim": "10",
        "epochs": str(EPOCHS),
        "lr": "0.001",
        "batch_size": "128",
        "seed": "0",
        "device": "auto",
        "device_used": "cpu",
        "precision": "auto",
        "precision_used": auto_precision(torch.device("cpu")),
        "cuda_graphs": "true",  # as asked: the CPU has none
        "cuda_graphs_used": "false",
        "deterministic": "true",
        "tf32_used": "false",
        "train_limit": "2048",
        "test_limit": "512",
    }
    assert expected.items() <= params.items()


def test_every_epoch_has_its_metrics(trained):
    store, run, _ = trained
    for key in names.EPOCH_METRICS:
        history = store.client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), key
    test = [m.value for m in store.client.get_metric_history(run.info.run_id, names.TEST_MSE)]
    assert test[-1] < test[0]


def test_summary_metrics(trained):
    _, run, _ = trained
    m = run.data.metrics
    assert m[names.PARAMS_TOTAL] == 228_235
    assert m[names.PARAMS_ENCODER] + m[names.PARAMS_DECODER] == m[names.PARAMS_TOTAL]
    assert m[names.GAP] == pytest.approx(m[names.FINAL_TEST_MSE] - m[names.FINAL_TRAIN_MSE])
    assert m[names.BEST_TEST_MSE] <= m[names.FINAL_TEST_MSE]
    assert 1 <= m[names.BEST_EPOCH] <= EPOCHS


def test_dataset_input_is_recorded(trained):
    _, run, _ = trained
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"mnist-training", "mnist-testing"}
    assert len({d.digest for d in inputs.values()}) == 1
    assert "MNIST" in json.loads(inputs["mnist-training"].source)["uri"]


def test_reconstruction_images_per_epoch_and_final(trained):
    store, run, _ = trained
    files = [a.path for a in store.client.list_artifacts(run.info.run_id, "images")]
    steps = {int(p.split("+step+")[1].split("+")[0]) for p in files if p.endswith(".png")}
    assert steps == set(range(1, EPOCHS + 1))
    top = [a.path for a in store.client.list_artifacts(run.info.run_id)]
    assert names.RECONSTRUCTION_FILE in top


def test_model_is_registered_under_its_alias(trained):
    store, run, _ = trained
    version = store.client.get_model_version_by_alias(names.DEFAULT_REGISTERED_MODEL, "conv-d10-s0")
    assert version.run_id == run.info.run_id
    assert version.tags["run_id"] == run.info.run_id
    assert run.data.tags[names.TAG_REGISTERED_VERSION] == str(version.version)


def test_run_and_experiment_are_described_for_the_ui(trained):
    store, run, _ = trained
    experiment = store.client.get_experiment(run.info.experiment_id)
    assert experiment.name == names.EXPERIMENT_NAME
    assert experiment.tags[names.TAG_EXPERIMENT_KIND] == names.EXPERIMENT_KIND
    assert "latent size" in experiment.tags[names.TAG_DESCRIPTION]
    text = run.data.tags[names.TAG_DESCRIPTION]
    assert text.startswith("**conv-d10-s0**: Convolutional autoencoder with a 10-number code")
    assert f"Final test MSE **{run.data.metrics[names.FINAL_TEST_MSE]:.5f}**" in text
    assert "No restart" in text or "restart(s)" in text
    assert f"models:/{names.DEFAULT_REGISTERED_MODEL}@conv-d10-s0" in text


def test_system_metrics_are_sampled(trained):
    _, run, _ = trained
    metrics = run.data.metrics
    assert metrics["system/cpu_utilization_percentage"] >= 0
    assert metrics["system/system_memory_usage_megabytes"] > 0


def test_logged_model_is_named_after_its_configuration_with_linked_metrics(trained):
    store, run, _ = trained
    (model,) = store.client.search_logged_models([run.info.experiment_id])
    assert model.name == "conv-d10" and model.source_run_id == run.info.run_id
    linked = {m.key: m for m in model.metrics}
    for key, dataset in (
        (names.FINAL_TEST_MSE, "mnist-testing"),
        (names.KNN_ACCURACY, "mnist-testing"),
        (names.FINAL_TRAIN_MSE, "mnist-training"),
        (names.PARAMS_TOTAL, None),
    ):
        assert linked[key].value == run.data.metrics[key], key
        assert linked[key].dataset_name == dataset, key


def test_registered_model_and_version_say_how_to_load_them(trained):
    store, run, _ = trained
    client, uri = store.client, f"models:/{names.DEFAULT_REGISTERED_MODEL}@conv-d10-s0"
    version = client.get_model_version_by_alias(names.DEFAULT_REGISTERED_MODEL, "conv-d10-s0")
    assert version.description.startswith("**conv-d10-s0**") and uri in version.description
    about = client.get_registered_model(names.DEFAULT_REGISTERED_MODEL).description
    assert f"models:/{names.DEFAULT_REGISTERED_MODEL}@{names.CHAMPION_ALIAS}" in about


def test_the_pickle_format_is_explained_once_instead_of_mlflows_warning(trained):
    _, _, result = trained
    assert result.stdout.count(PICKLE_NOTE) == 1
    assert "Saving pytorch model by Pickle" not in result.stderr


def test_mlflow_experiment_name_wins_and_a_users_description_is_kept(store, mnist_dir):
    client = store.client
    mine = client.create_experiment("mine", tags={names.TAG_DESCRIPTION: "my own words"})
    store.env["MLFLOW_EXPERIMENT_NAME"] = "mine"
    params = small_args(mnist_dir, latent_dim=2, epochs=1, train_limit=256, test_limit=64)
    result = store.cli("train", *cli_flags(params))
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = store.runs()
    assert run.info.experiment_id == mine
    tags = client.get_experiment(mine).tags
    assert tags[names.TAG_DESCRIPTION] == "my own words"
    assert tags[names.TAG_EXPERIMENT_KIND] == names.EXPERIMENT_KIND
    assert client.get_experiment_by_name(names.EXPERIMENT_NAME) is None


def test_registered_model_reloaded_in_a_fresh_process_reproduces_the_logged_mse(trained, mnist_dir):
    store, run, _ = trained
    uri = f"models:/{names.DEFAULT_REGISTERED_MODEL}@conv-d10-s0"
    out = store.python(LOAD_AND_SCORE, uri, str(mnist_dir), "512")
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["mse"] == pytest.approx(run.data.metrics[names.FINAL_TEST_MSE], rel=1e-5)
    assert loaded["code"] == [4, 10]  # encode() survives the registry
    assert str(store.root) in loaded["module"]  # the class came with the model, not the repo


@pytest.mark.skipif(
    not bf16_supported(torch.device("cpu")),
    reason="needs bfloat16 kernels: torch.ops.mkldnn._is_mkldnn_bf16_supported() is False here",
)
def test_a_bf16_run_records_its_precision_and_float32_mses(store, mnist_dir):
    """The logged test MSE of a bf16 run is the float32 evaluation of its model: a fresh
    process, reloading it and computing in float32 without autocast, gets it again."""
    args = small_args(mnist_dir, latent_dim=10, epochs=2, precision="bf16")
    result = store.cli("train", *cli_flags(args))
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = store.runs()
    assert run.data.params["precision"] == "bf16"
    assert "bfloat16" in run.data.tags["mlflow.note.content"]
    uri = f"models:/{names.DEFAULT_REGISTERED_MODEL}@conv-d10-s0"
    out = store.python(LOAD_AND_SCORE, uri, str(mnist_dir), args["test_limit"])
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["mse"] == pytest.approx(run.data.metrics[names.FINAL_TEST_MSE], rel=1e-5)


def test_sweep_runs_every_step_as_a_child_of_one_parent(store, mnist_dir):
    result = store.mlflow_run("main", **small_args(mnist_dir, latent_dims="3,10", epochs=1))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = store.runs()
    (parent,) = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "sweep"]
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("sweep-")
    children = [
        r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        and r.data.tags.get(names.TAG_ROLE) == "train"
    ]
    assert sorted(r.info.run_name for r in children) == [
        "conv-d10-s0",
        "conv-d3-s0",
        "linear-d10-s0",
    ]
    assert {r.info.status for r in children} == {"FINISHED"}
    # Trained in the sweep's process, each step's run is recorded as `mlflow run -e train`
    # would record it: the project's source and commit, and the step's entry point.
    (comparison,) = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "comparison"]
    assert comparison.data.tags["mlflow.parentRunId"] == parent.info.run_id
    source = {k: v for k, v in parent.data.tags.items() if k.startswith("mlflow.source.")}
    assert source["mlflow.source.type"] == "PROJECT" and "mlflow.source.git.commit" in source
    for run in [*children, comparison]:
        assert source.items() <= run.data.tags.items(), run.info.run_name
    entry_points = {r.info.run_name: r.data.tags[names.TAG_ENTRY_POINT] for r in children}
    assert entry_points == {
        "conv-d3-s0": "train",
        "conv-d10-s0": "train",
        "linear-d10-s0": "train_linear",
    }
    assert comparison.data.tags[names.TAG_ENTRY_POINT] == "compare"
    assert comparison.data.params["parent_run_id"] == parent.info.run_id
    client = store.client
    for alias in ("conv-d3-s0", "conv-d10-s0", "linear-d10-s0"):
        version = client.get_model_version_by_alias(names.DEFAULT_REGISTERED_MODEL, alias)
        assert version.run_id in {r.info.run_id for r in children}


def wait_for_metric(store, key: str, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = store.runs()
        if runs and key in runs[0].data.metrics:
            return runs[0]
        time.sleep(0.5)
    log = (store.root / "process.log").read_text()[-3000:]
    raise AssertionError(f"no run logged {key} within {timeout} s:\n{log}")


def test_sigterm_ends_the_run_killed_and_a_resume_completes_it(store, mnist_dir):
    # 16 steps per epoch: the signal comes once the first epoch is recorded.
    epochs = 40
    params = small_args(mnist_dir, latent_dim=10, epochs=epochs, train_limit=2048)
    proc = store.popen(cli_command("train", *cli_flags(params)))
    try:
        wait_for_metric(store, names.TEST_MSE)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    (run,) = store.runs()
    run_id = run.info.run_id
    assert proc.returncode == 130
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags[names.TAG_FAILURE]
    recorded = [m.step for m in store.client.get_metric_history(run_id, names.TEST_MSE)]
    assert recorded and recorded == list(range(1, len(recorded) + 1))
    checkpoint = [a.path for a in store.client.list_artifacts(run_id, names.CHECKPOINT_DIR)]
    assert checkpoint == [f"{names.CHECKPOINT_DIR}/{names.CHECKPOINT_FILE}"]

    result = store.mlflow_run("train", resume_run_id=run_id)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = store.client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags[names.TAG_RESUMED].startswith("after epoch ")
    for key in names.EPOCH_METRICS:  # no gap, no step twice
        steps = sorted(m.step for m in store.client.get_metric_history(run_id, key))
        assert steps == list(range(1, epochs + 1)), key
    assert resumed.data.metrics[names.BEST_EPOCH] >= 1
    version = store.client.get_model_version_by_alias(names.DEFAULT_REGISTERED_MODEL, "conv-d10-s0")
    assert version.run_id == run_id
    (record,) = store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_RESUME}'")
    assert record.data.tags[names.TAG_RESUMED_RUN] == run_id
    assert record.info.status == "FINISHED"


@pytest.mark.parametrize(
    ("which", "message"),
    [("finished", "has FINISHED: nothing to resume"), ("missing", "no run 'f00d'")],
)
def test_resume_of_a_run_that_cannot_be_resumed_is_refused(trained, which, message):
    store, run, _ = trained
    run_id = run.info.run_id if which == "finished" else "f00d"
    before = len(store.runs())
    result = store.cli("train", "--resume-run-id", run_id)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(store.runs()) == before


def test_ctrl_c_under_mlflow_run_ends_the_run_killed(store, mnist_dir):
    params = small_args(mnist_dir, latent_dim=10, epochs=200, train_limit=2048)
    proc = store.popen(mlflow_command("train", params))
    try:
        wait_for_metric(store, names.TEST_MSE)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    # `mlflow run` itself marks the run FAILED as it exits; the status is put back.
    deadline = time.time() + 30
    while (run := store.runs()[0]).info.status != "KILLED" and time.time() < deadline:
        time.sleep(0.5)
    assert run.info.status == "KILLED"
    assert run.data.tags[names.TAG_FAILURE].startswith("interrupted")
    assert store.client.get_metric_history(run.info.run_id, names.TEST_MSE)


def test_failure_midway_ends_the_run_failed_with_the_reason(store, mnist_dir):
    # At lr=1 the linear model's loss stays finite but runs away (docs/training-health.md).
    # (A non-finite loss: tests/pipeline/training/test_train.py; an lr large enough is refused.)
    reason = "DivergedError: training diverged at the end of seed 0's health window, step 200"
    overrides = {"model_kind": "linear", "lr": "1", "batch_size": 4, "epochs": 1}
    params = small_args(mnist_dir, latent_dim=10, **overrides)
    result = store.cli("train", *cli_flags(params))
    assert result.returncode != 0
    (run,) = store.runs()
    assert run.info.status == "FAILED"
    assert run.data.tags[names.TAG_FAILURE].startswith(reason), run.data.tags[names.TAG_FAILURE]
    assert f"error: {reason}" in result.stderr, result.stderr[-2000:]
    assert store.client.search_model_versions() == []


def test_a_run_shorter_than_the_sampling_interval_still_has_system_metrics(store, mnist_dir):
    """MLflow logs its first sample only after the interval; the run ends long before."""
    store.env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "600"
    params = small_args(mnist_dir, model_kind="linear", latent_dim=4, epochs=1, train_limit=512)
    result = store.cli("train", *cli_flags(params))
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = store.runs()
    assert run.info.status == "FINISHED"
    assert run.data.metrics["system/system_memory_usage_megabytes"] > 0
    cpu = store.client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in cpu] == [0] and 0 <= cpu[0].value <= 100
