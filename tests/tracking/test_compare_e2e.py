"""The comparison end to end: a tiny sweep (which ends with `compare`) in a temporary SQLite
store, then `compare` again on partial data and on nothing at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data import load_mnist
from tests.browser import check_rendered, ensure_chromium
from tests.tracking.conftest import Store, make_store
from tracking import cli, names
from tracking.query import HISTORY_METRICS, find_runs

pytestmark = pytest.mark.slow

MODEL = names.DEFAULT_REGISTERED_MODEL
ARTIFACTS = {
    "report.csv",
    "report.md",
    "report.html",
    "compared_runs.csv",
    "loss_curves.png",
    "loss_curves.html",
    "reconstructions.png",
    "latent_3d.html",
    "latent_projections/conv-d10.html",
    "latent_projections/linear-d10.html",
}
LOAD_CHAMPION = """
import json, sys, mlflow, torch
model = mlflow.pytorch.load_model(sys.argv[1], map_location="cpu")
code = model.encode(torch.zeros(2, 1, 28, 28))
print(json.dumps({"latent_dim": code.shape[1]}))
"""


def small(mnist_dir: Path) -> list[str]:
    sizes = ["--train-limit", "2048", "--test-limit", "512"]
    return ["--epochs", "2", *sizes, "--data-dir", str(mnist_dir)]


def comparisons(store: Store, parent_run_id: str | None = None) -> list:
    query = f"tags.{names.TAG_ROLE} = '{names.ROLE_COMPARISON}'"
    runs = store.runs(query)
    if parent_run_id:
        runs = [r for r in runs if r.data.tags.get(names.TAG_PARENT_RUN) == parent_run_id]
    return sorted(runs, key=lambda r: r.info.start_time)


def artifact_paths(store: Store, run_id: str, folder: str = "") -> set[str]:
    paths = set()
    for item in store.client.list_artifacts(run_id, folder or None):
        paths |= artifact_paths(store, run_id, item.path) if item.is_dir else {item.path}
    return paths


def download(store: Store, run_id: str, path: str, into: Path) -> Path:
    return Path(store.client.download_artifacts(run_id, path, str(into)))


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed first where missing (as CI needs)."""
    return ensure_chromium()


@pytest.fixture(scope="module")
def swept(tmp_path_factory, mnist_dir):
    """`sweep --latent-dims 3,10`: conv d=3, conv d=10, linear d=10, then the comparison."""
    store = make_store(tmp_path_factory.mktemp("compare-store"))
    result = store.cli("sweep", "--latent-dims", "3,10", *small(mnist_dir), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sweep,) = store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_SWEEP}'")
    (comparison,) = comparisons(store, sweep.info.run_id)
    return store, sweep, comparison, result.stdout


def test_main_ends_with_a_finished_comparison_holding_every_artifact(swept):
    store, sweep, comparison, stdout = swept
    assert comparison.info.status == "FINISHED"
    assert comparison.info.run_name.startswith("comparison-")
    assert comparison.info.experiment_id == sweep.info.experiment_id
    training = store.runs(f"tags.{names.TAG_PARENT_RUN} = '{sweep.info.run_id}'")
    training_ids = {r.info.run_id for r in training if r.data.tags[names.TAG_ROLE] == "train"}
    assert len(training_ids) == 3
    assert set(comparison.data.tags[names.TAG_COMPARED_RUNS].split(",")) == training_ids
    assert artifact_paths(store, comparison.info.run_id) == ARTIFACTS
    assert "recommended:" in stdout and f"models:/{MODEL}@{names.CHAMPION_ALIAS}" in stdout


def test_report_numbers_come_from_the_runs(swept, tmp_path):
    store, _, comparison, _ = swept
    report = pd.read_csv(download(store, comparison.info.run_id, "report.csv", tmp_path))
    assert sorted(report["model"]) == ["conv-d10", "conv-d3", "linear-d10"]
    for row in report.itertuples():
        run = store.client.get_run(row.run_id)
        assert row.final_test_mse == pytest.approx(run.data.metrics[names.FINAL_TEST_MSE])
        assert row.knn5_accuracy == pytest.approx(run.data.metrics[names.KNN_ACCURACY])
        assert row.compression_ratio == pytest.approx(784 / row.latent_dim)
        assert row.gap == pytest.approx(row.final_test_mse - row.final_train_mse)
    markdown = download(store, comparison.info.run_id, "report.md", tmp_path).read_text()
    assert "Rule: Among the models that did not collapse" in markdown
    assert "No model collapsed" in markdown and "None: every training run finished." in markdown


def test_champion_alias_follows_the_rule_and_loads(swept, tmp_path):
    store, _, comparison, _ = swept
    report = pd.read_csv(download(store, comparison.info.run_id, "report.csv", tmp_path))
    healthy = report[~report["collapsed"]]
    within = healthy[healthy["final_test_mse"] <= healthy["final_test_mse"].min() * 1.10]
    expected = within.sort_values(["latent_dim", "final_test_mse"]).iloc[0]
    version = store.client.get_model_version_by_alias(MODEL, names.CHAMPION_ALIAS)
    assert version.run_id == expected["run_id"] == comparison.data.tags[names.TAG_CHAMPION_RUN]
    assert str(version.version) == comparison.data.tags[names.TAG_CHAMPION_VERSION]
    markdown = download(store, comparison.info.run_id, "report.md", tmp_path).read_text()
    pick = f"Pick: {expected['model']} ({MODEL} version {version.version}, alias champion)."
    assert pick in markdown
    uri = f"models:/{MODEL}@{names.CHAMPION_ALIAS}"
    loaded = store.python(LOAD_CHAMPION, uri, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert json.loads(loaded.stdout.splitlines()[-1]) == {"latent_dim": int(expected["latent_dim"])}


def test_latent_3d_page_renders_in_chromium(swept, tmp_path, mnist_dir, chromium):
    store, _, comparison, _ = swept
    page = download(store, comparison.info.run_id, "latent_3d.html", tmp_path)
    counts = np.bincount(load_mnist(mnist_dir, log=print).test.labels.numpy()).tolist()
    check_rendered(page, counts, chromium, min_colours=8)  # digits may hide one another


def test_query_casts_params_once_and_reads_histories(swept, monkeypatch):
    store, sweep, _, _ = swept
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    runset = find_runs(sweep.info.run_id)
    runs = runset.runs.set_index("run_name")
    assert runs.loc["conv-d3", "latent_dim"] == 3 and str(runs["latent_dim"].dtype) == "Int64"
    assert runs["lr"].tolist() == [0.001] * 3 and runs["train_limit"].tolist() == [2048] * 3
    assert set(runs["kind"]) == {"conv", "linear"} and runs["status"].eq("FINISHED").all()
    assert runset.histories.groupby(["run_id", "metric"]).size().eq(2).all()  # 2 epochs
    assert len(runset.histories) == 3 * 2 * len(HISTORY_METRICS)  # runs x epochs x metrics
    assert find_runs().source == runset.source  # the latest sweep by default


def test_failed_and_running_runs_are_excluded(swept, mnist_dir, tmp_path):
    store, sweep, _, _ = swept
    client, experiment = store.client, sweep.info.experiment_id
    tags = {names.TAG_ROLE: "train", names.TAG_PARENT_RUN: sweep.info.run_id}
    failed = client.create_run(experiment, tags=tags, run_name="conv-d100").info.run_id
    client.set_terminated(failed, "FAILED")
    running = client.create_run(experiment, tags=tags, run_name="conv-d250").info.run_id
    result = store.cli(
        "compare", "--parent-run-id", sweep.info.run_id, "--data-dir", str(mnist_dir)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"excluded: conv-d100 ({failed}): FAILED" in result.stdout
    assert f"excluded: conv-d250 ({running}): RUNNING" in result.stdout
    latest = comparisons(store)[-1]
    assert set(latest.data.tags[names.TAG_EXCLUDED_RUNS].split(",")) == {failed, running}
    markdown = download(store, latest.info.run_id, "report.md", tmp_path).read_text()
    assert f"conv-d100 ({failed}): FAILED" in markdown
    report = pd.read_csv(download(store, latest.info.run_id, "report.csv", tmp_path))
    assert len(report) == 3 and failed not in set(report["run_id"])


def test_an_unknown_registered_model_is_refused_before_any_run(swept, mnist_dir):
    store, sweep, _, _ = swept
    before = len(store.runs())
    result = store.cli(
        "compare", "--registered-model", "nope", "--data-dir", str(mnist_dir), timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: no registered model 'nope' at ")
    assert len(store.runs()) == before


def test_no_runs_is_a_clear_error(store, mnist_dir, monkeypatch, capsys):
    result = store.cli("compare", "--data-dir", str(mnist_dir))  # a real process: exit code
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no sweep run") and store.uri in line
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)  # the same, in-process (faster)
    assert cli.main(["compare", "--all-finished", "--data-dir", str(mnist_dir)]) == 2
    assert "error: no finished training runs" in capsys.readouterr().err
    assert comparisons(store) == []


def test_without_a_d3_run_the_projections_still_come_out(store, mnist_dir, tmp_path):
    trained = store.cli("train", "--kind", "linear", "--latent-dim", "4", *small(mnist_dir))
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = store.cli("compare", "--all-finished", "--data-dir", str(mnist_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No d=3 run" in result.stdout
    (comparison,) = comparisons(store)
    paths = artifact_paths(store, comparison.info.run_id)
    assert "latent_projections/linear-d4.html" in paths and "latent_3d.html" not in paths
    markdown = download(store, comparison.info.run_id, "report.md", tmp_path).read_text()
    assert "No d=3 run among the compared runs" in markdown
    version = store.client.get_model_version_by_alias(MODEL, names.CHAMPION_ALIAS)
    assert version.run_id == comparison.data.tags[names.TAG_CHAMPION_RUN]
