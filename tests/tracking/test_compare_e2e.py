"""The comparison end to end: a tiny sweep over two seeds (which ends with `compare`) in a
temporary SQLite store, then `compare` again on partial data and on nothing at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.analysis.spread import SPREAD_METRICS, STATS
from pipeline.analysis.views import EXPLORED
from pipeline.config import DEFAULT_MARGIN
from pipeline.training.datasets.mnist import Mnist
from tests.browser import check_study_page, cold_load_seconds
from tests.tracking.conftest import Store, make_store
from tracking import cli, names
from tracking.query import HISTORY_METRICS, REASON_CHARS, find_runs
from tracking.registry import PICKLE_NOTE

pytestmark = pytest.mark.slow

MODEL = names.DEFAULT_REGISTERED_MODEL
SEEDS = (0, 1)
CONFIGS = ["conv-d10", "conv-d3", "linear-d10"]
ARTIFACTS = {
    "report.csv",
    "runs.csv",
    "mse_vs_latent.png",
    "report.md",
    "report.html",
    "compared_runs.csv",
    "loss_curves.png",
    "reconstructions.png",
    "interpolations.png",
    "study.html",
    names.REPORT_TABLE,
}
MAX_ARTIFACT_BYTES = 10_000_000  # the whole comparison run, study.html's plotly.js included
LOAD_LIMIT_S = 3.0
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


def artifact_sizes(store: Store, run_id: str, folder: str = "") -> dict[str, int]:
    """Every artifact of the run, in every folder, and its size in bytes."""
    sizes = {}
    for item in store.client.list_artifacts(run_id, folder or None):
        sizes |= (
            artifact_sizes(store, run_id, item.path) if item.is_dir else {item.path: item.file_size}
        )
    return sizes


def artifact_paths(store: Store, run_id: str) -> set[str]:
    return set(artifact_sizes(store, run_id))


def download(store: Store, run_id: str, path: str, into: Path) -> Path:
    return Path(store.client.download_artifacts(run_id, path, str(into)))


@pytest.fixture(scope="module")
def swept(tmp_path_factory, mnist_dir):
    """`sweep --latent-dims 3,10 --seeds 0,1`: conv d=3, conv d=10 and linear d=10, each
    from seeds 0 and 1, then the comparison."""
    store = make_store(tmp_path_factory.mktemp("compare-store"))
    seeds = ",".join(map(str, SEEDS))
    args = ["--latent-dims", "3,10", "--seeds", seeds, *small(mnist_dir)]
    result = store.cli("sweep", *args, timeout=1200)
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
    trained = [r for r in training if r.data.tags[names.TAG_ROLE] == "train"]
    training_ids = {r.info.run_id for r in trained}
    expected = sorted(f"{config}-s{seed}" for config in CONFIGS for seed in SEEDS)
    assert sorted(r.info.run_name for r in trained) == expected  # one per (config, seed)
    assert {r.data.params["seed"] for r in trained} == {"0", "1"}
    assert set(comparison.data.tags[names.TAG_COMPARED_RUNS].split(",")) == training_ids
    assert artifact_paths(store, comparison.info.run_id) == ARTIFACTS
    (line,) = [line for line in stdout.splitlines() if line.startswith("study page: ")]
    page = Path(line.removeprefix("study page: ").removesuffix(" (open it in a browser)"))
    assert page.name == "study.html" and page.is_file()  # a local path the user can open
    assert "recommended:" in stdout and f"models:/{MODEL}@{names.CHAMPION_ALIAS}" in stdout
    page = f"#/experiments/{sweep.info.experiment_id}/runs?workflowType=machine_learning"
    assert "browse the runs: `mlflow ui --backend-store-uri" in stdout and page in stdout
    assert stdout.count(PICKLE_NOTE) == 1  # once for the six steps


def test_sweep_and_comparison_are_described_with_the_table(swept):
    store, sweep, comparison, _ = swept
    sweep = store.client.get_run(sweep.info.run_id)  # described after the fixture read it
    for run in (sweep, comparison):
        text = run.data.tags[names.TAG_DESCRIPTION]
        assert "| model " in text and "conv-d3" in text and "linear-d10" in text, text
        assert "**Recommended: " in text and "report.html" in text


def test_report_is_logged_as_a_table(swept, tmp_path):
    store, _, comparison, _ = swept
    run_id = comparison.info.run_id
    table = json.loads(download(store, run_id, names.REPORT_TABLE, tmp_path).read_text())
    configs = pd.read_csv(download(store, run_id, "report.csv", tmp_path))
    assert table["columns"] == list(configs.columns)
    assert [row[0] for row in table["data"]] == list(configs.iloc[:, 0])


def test_report_numbers_come_from_the_runs(swept, tmp_path):
    store, _, comparison, _ = swept
    runs = pd.read_csv(download(store, comparison.info.run_id, "runs.csv", tmp_path))
    assert len(runs) == len(CONFIGS) * len(SEEDS)
    restarts = 0
    for row in runs.itertuples():
        run = store.client.get_run(row.run_id)
        assert row.model == run.info.run_name and row.seed == int(run.data.params["seed"])
        assert row.final_test_mse == pytest.approx(run.data.metrics[names.FINAL_TEST_MSE])
        assert row.knn5_accuracy == pytest.approx(run.data.metrics[names.KNN_ACCURACY])
        assert row.compression_ratio == pytest.approx(784 / row.latent_dim)
        assert row.gap == pytest.approx(row.final_test_mse - row.final_train_mse)
        assert row.restarts == run.data.metrics[names.RESTARTS]
        restarts += row.restarts
    markdown = download(store, comparison.info.run_id, "report.md", tmp_path).read_text()
    assert "Rule: Among the configurations none of whose seeds collapsed" in markdown
    assert "None: every training run finished." in markdown
    # "No model collapsed" only when no initialisation was replaced, no recorded epoch sat
    # at the all-black loss and no final model is constant
    stalled = runs["stalled_epochs"].fillna("").astype(str).ne("").any()
    clean = restarts == 0 and not stalled and not runs["collapsed"].any()
    assert ("No model collapsed" in markdown) == clean
    assert ("Initialisations replaced by the health check" in markdown) == (restarts > 0)
    assert "Hosts of these runs: " in markdown


def test_report_groups_the_seeds_of_each_configuration(swept, tmp_path):
    store, _, comparison, _ = swept
    report = pd.read_csv(download(store, comparison.info.run_id, "report.csv", tmp_path))
    runs = pd.read_csv(download(store, comparison.info.run_id, "runs.csv", tmp_path))
    assert sorted(report["model"]) == CONFIGS and set(report["seeds"]) == {len(SEEDS)}
    for metric in SPREAD_METRICS:  # every spread column, equal to pandas on the runs
        by_config = runs.groupby("config")[metric]
        for stat in STATS:
            column = report.set_index("model")[f"{metric}_{stat}"]
            expected = getattr(by_config, stat)()
            assert column.sort_index().to_numpy() == pytest.approx(expected.to_numpy()), column
    markdown = download(store, comparison.info.run_id, "report.md", tmp_path).read_text()
    assert "By configuration: means over seeds" in markdown and " ± " in markdown
    assert "Spread: " in markdown and "spread between seeds is unknown" not in markdown


def test_champion_alias_follows_the_rule_and_loads(swept, tmp_path):
    store, _, comparison, _ = swept
    report = pd.read_csv(download(store, comparison.info.run_id, "report.csv", tmp_path))
    runs = pd.read_csv(download(store, comparison.info.run_id, "runs.csv", tmp_path))
    healthy = report[report["collapsed_runs"] == 0]
    mean = healthy["final_test_mse_mean"]
    within = healthy[mean <= mean.min() * (1 + DEFAULT_MARGIN)]
    expected = within.sort_values(["latent_dim", "final_test_mse_mean"]).iloc[0]
    seeds = runs[runs["config"] == expected["model"]]
    best_seed = seeds.loc[seeds["final_test_mse"].idxmin(), "run_id"]
    version = store.client.get_model_version_by_alias(MODEL, names.CHAMPION_ALIAS)
    assert version.run_id == best_seed == comparison.data.tags[names.TAG_CHAMPION_RUN]
    assert str(version.version) == comparison.data.tags[names.TAG_CHAMPION_VERSION]
    markdown = download(store, comparison.info.run_id, "report.md", tmp_path).read_text()
    pick = f"Pick: {expected['model']} ({MODEL} version {version.version}, alias champion)."
    assert pick in markdown
    uri = f"models:/{MODEL}@{names.CHAMPION_ALIAS}"
    loaded = store.python(LOAD_CHAMPION, uri, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert json.loads(loaded.stdout.splitlines()[-1]) == {"latent_dim": int(expected["latent_dim"])}


def test_comparison_artifacts_are_light(swept):
    store, _, comparison, _ = swept
    sizes = artifact_sizes(store, comparison.info.run_id)
    print("artifact bytes:", sorted(sizes.items(), key=lambda item: -item[1]))
    assert sum(sizes.values()) < MAX_ARTIFACT_BYTES, sizes


def test_study_page_works_offline_in_chromium(swept, tmp_path, mnist_dir, chromium):
    store, _, comparison, _ = swept
    page = download(store, comparison.info.run_id, "study.html", tmp_path)
    labels = Mnist().load(mnist_dir, log=print).test.labels.numpy()[:EXPLORED]
    counts = np.bincount(labels, minlength=10).tolist()  # conv-d3's own codes, drawn first
    check_study_page(page, chromium, counts, tmp_path / "hovered.png", min_colours=8)
    load_s = cold_load_seconds(page, chromium)
    print(f"study.html loaded in {load_s:.2f} s")
    assert load_s < LOAD_LIMIT_S


def test_query_casts_params_once_and_reads_histories(swept, monkeypatch):
    store, sweep, _, _ = swept
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    runset = find_runs(sweep.info.run_id)
    runs = runset.runs.set_index("run_name")
    n = len(CONFIGS) * len(SEEDS)
    assert runs.loc["conv-d3-s1", "latent_dim"] == 3 and str(runs["latent_dim"].dtype) == "Int64"
    assert runs.loc["conv-d3-s1", "seed"] == 1 and runs.loc["conv-d3-s1", "config"] == "conv-d3"
    assert runs["lr"].tolist() == [0.001] * n and runs["train_limit"].tolist() == [2048] * n
    assert set(runs["kind"]) == {"conv", "linear"} and runs["status"].eq("FINISHED").all()
    assert runset.histories.groupby(["run_id", "metric"]).size().eq(2).all()  # 2 epochs
    assert len(runset.histories) == n * 2 * len(HISTORY_METRICS)  # runs x epochs x metrics
    assert find_runs().source == runset.source  # the latest sweep by default


def test_failed_and_running_runs_are_excluded(swept, mnist_dir, tmp_path):
    store, sweep, _, _ = swept
    client, experiment = store.client, sweep.info.experiment_id
    tags = {names.TAG_ROLE: "train", names.TAG_PARENT_RUN: sweep.info.run_id}
    failed = client.create_run(experiment, tags=tags, run_name="conv-d100").info.run_id
    reason = "DivergedError: training diverged at epoch 2, step 512: " + "x" * 400
    client.set_tag(failed, names.TAG_FAILURE, reason)
    client.set_terminated(failed, "FAILED")
    running = client.create_run(experiment, tags=tags, run_name="conv-d250").info.run_id
    result = store.cli(
        "compare", "--parent-run-id", sweep.info.run_id, "--data-dir", str(mnist_dir)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shortened = f"{reason[: REASON_CHARS - 3]}..."
    assert f"excluded: conv-d100 ({failed}): FAILED ({shortened})\n" in result.stdout
    assert f"excluded: conv-d250 ({running}): RUNNING\n" in result.stdout
    latest = comparisons(store)[-1]
    assert set(latest.data.tags[names.TAG_EXCLUDED_RUNS].split(",")) == {failed, running}
    markdown = download(store, latest.info.run_id, "report.md", tmp_path).read_text()
    assert f"conv-d100 ({failed}): FAILED" in markdown
    runs = pd.read_csv(download(store, latest.info.run_id, "runs.csv", tmp_path))
    assert len(runs) == len(CONFIGS) * len(SEEDS) and failed not in set(runs["run_id"])


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
    assert line.startswith(f"error: no experiment named '{names.EXPERIMENT_NAME}'"), line
    store.client.create_experiment(names.EXPERIMENT_NAME)
    result = store.cli("compare", "--data-dir", str(mnist_dir))
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no sweep run") and store.uri in line
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)  # the same, in-process (faster)
    assert cli.main(["compare", "--all-finished", "--data-dir", str(mnist_dir)]) == 2
    assert "error: no finished training runs" in capsys.readouterr().err
    assert comparisons(store) == []


def test_without_a_d3_run_the_projections_still_come_out(store, mnist_dir, tmp_path):
    trained = store.cli("train", "--model-kind", "linear", "--latent-dim", "4", *small(mnist_dir))
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = store.cli("compare", "--all-finished", "--data-dir", str(mnist_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No d=3 run" in result.stdout
    (comparison,) = comparisons(store)
    assert {"study.html", "interpolations.png"} <= artifact_paths(store, comparison.info.run_id)
    page = download(store, comparison.info.run_id, "study.html", tmp_path).read_text()
    assert "linear-d4: 3D PCA projection of its codes" in page
    markdown = download(store, comparison.info.run_id, "report.md", tmp_path).read_text()
    assert "No d=3 run among the compared runs" in markdown
    version = store.client.get_model_version_by_alias(MODEL, names.CHAMPION_ALIAS)
    assert version.run_id == comparison.data.tags[names.TAG_CHAMPION_RUN]
