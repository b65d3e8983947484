"""Comparison benchmark: `compare --all-finished` over many finished runs in one store.

Fills a fresh SQLite store in a temporary folder with N finished training runs of the five
standard configurations. The newest run of each configuration (the one whose model the
comparison loads) is trained for real on a slice of MNIST; the others are copies of those
five with older start times and jittered MSEs, logged in one batch each, with the same
params, tags, metric histories, dataset inputs and a registered model version of their
own. Then times `python -m tracking.cli compare --all-finished true` against that store,
as a user runs it (full test set), and checks that the comparison finished with a row
per run in its runs.csv. The target: under 30 s for 200 runs.

    .venv/bin/python -m benchmarks.compare                      # 200 runs of 10 epochs
    .venv/bin/python -m benchmarks.compare --runs 12 --epochs 2  # smoke size
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run
from mlflow.entities.model_registry import ModelVersion

from pipeline.config import DataConfig, ModelConfig, TrainConfig
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.tensors import flush_denormals
from tracking import names
from tracking.query import current_experiment_id, find_runs
from tracking.registry import version_of_run
from tracking.requests import TrainingRequest
from tracking.runs import choose_experiment
from tracking.training import train_tracked

PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = (("conv", 3), ("conv", 10), ("conv", 100), ("conv", 250), ("linear", 10))
MODEL = names.DEFAULT_REGISTERED_MODEL
TRAIN_LIMIT, TEST_LIMIT = 512, 256  # the real runs' slice: they only need to be genuine
TARGET_SECONDS, TARGET_RUNS = 30.0, 200
SPACING_MS = 10 * 60 * 1000  # copies start ten minutes apart, before the real runs
MSE_METRICS = {
    names.TRAIN_MSE,
    names.TEST_MSE,
    names.FINAL_TRAIN_MSE,
    names.FINAL_TEST_MSE,
    names.BEST_TEST_MSE,
    names.GAP,
}
BATCH = 1000  # MLflow's limit on metrics per log_batch call


def train_real(data_dir: str, epochs: int) -> list[Run]:
    """The newest run of every configuration, trained and registered as `train` does."""
    data = DataConfig(data_dir=data_dir, train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT)
    train = TrainConfig(epochs=epochs, device="cpu")
    client, runs = MlflowClient(), []
    choose_experiment()  # the study's, where `compare --all-finished` looks
    for kind, latent in CONFIGS:
        quiet = io.StringIO()  # per-epoch lines and MLflow's notes, five times over
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            run_id = train_tracked(TrainingRequest(ModelConfig(kind, latent), data, train, MODEL))
        runs.append(client.get_run(run_id))
    return runs


@dataclass(frozen=True)
class Template:
    """A real run as its copies need it: the run, every value of every metric, its version."""

    run: Run
    metrics: list[Metric]
    version: ModelVersion


def template(client: MlflowClient, run: Run) -> Template:
    metrics = [
        m for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)
    ]
    version = client.get_model_version(MODEL, version_of_run(MODEL, run.info.run_id))
    return Template(run, metrics, version)


def copy_run(client: MlflowClient, source: Template, start_time: int, scale: float) -> None:
    """A finished copy of source starting at start_time, its MSEs multiplied by scale,
    with a registered version of the source's model."""
    info, data = source.run.info, source.run.data
    shift = start_time - info.start_time
    tags = {k: v for k, v in data.tags.items() if k != "mlflow.runName"}
    run_id = client.create_run(info.experiment_id, start_time, tags, info.run_name).info.run_id
    metrics = [
        Metric(m.key, m.value * (scale if m.key in MSE_METRICS else 1), m.timestamp + shift, m.step)
        for m in source.metrics
    ]
    params = [Param(k, v) for k, v in data.params.items()]
    client.log_batch(run_id, metrics[:BATCH], params)
    for start in range(BATCH, len(metrics), BATCH):
        client.log_batch(run_id, metrics[start : start + BATCH])
    client.log_inputs(run_id, datasets=source.run.inputs.dataset_inputs)
    version = source.version  # the same model, registered again for this run
    copied = client.create_model_version(
        MODEL, version.source, run_id, tags={**version.tags, "run_id": run_id}
    )
    client.set_tag(run_id, names.TAG_REGISTERED_VERSION, str(copied.version))
    client.set_terminated(run_id, "FINISHED", info.end_time + shift)


def fill(runs: int, data_dir: str, epochs: int) -> tuple[float, float]:
    """Train the five real runs, then add runs - 5 copies; seconds of each part."""
    start = time.perf_counter()
    real = train_real(data_dir, epochs)
    trained = time.perf_counter() - start
    start = time.perf_counter()
    client, rng = MlflowClient(), np.random.default_rng(0)
    templates = [template(client, run) for run in real]
    oldest = min(r.info.start_time for r in real)
    copies = runs - len(real)
    for i in range(copies):
        start_time = oldest - (copies - i) * SPACING_MS
        copy_run(client, templates[i % len(real)], start_time, float(rng.lognormal(0, 0.05)))
    return trained, time.perf_counter() - start


def run_compare(data_dir: str, cwd: str) -> tuple[float, subprocess.CompletedProcess]:
    """`python -m tracking.cli compare --all-finished true`: wall seconds and the result."""
    cmd = [sys.executable, "-m", "tracking.cli", "compare", "--all-finished", "true"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    start = time.perf_counter()
    result = subprocess.run(
        [*cmd, "--data-dir", data_dir], cwd=cwd, env=env, capture_output=True, text=True
    )
    return time.perf_counter() - start, result


def comparison_run(client: MlflowClient) -> Run | None:
    query = f"tags.{names.TAG_ROLE} = '{names.ROLE_COMPARISON}'"
    found = client.search_runs([current_experiment_id()], query)
    return found[0] if found else None


def report_rows(client: MlflowClient, run: Run, into: str) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run.info.run_id, "runs.csv", into))


def query_seconds() -> float:
    """What the comparison's query costs in a warm process (find_runs, read-only)."""
    start = time.perf_counter()
    find_runs(all_finished=True)
    return time.perf_counter() - start


def summary(report: pd.DataFrame, run: Run) -> str:
    counts = report["model"].value_counts().sort_index()
    compared = run.data.tags.get(names.TAG_COMPARED_RUNS, "")
    return (
        f"runs.csv {len(report)} rows ({report['run_id'].nunique()} distinct runs: "
        + ", ".join(f"{model} x{n}" for model, n in counts.items())
        + f"); {names.TAG_COMPARED_RUNS} tag holds {compared.count(',') + 1} ids"
    )


def compare_and_check(data_dir: str, runs: int, tmp: str) -> int:
    """Time the comparison, print the figures; 0 if it finished with a row per run."""
    wall, result = run_compare(data_dir, tmp)
    client = MlflowClient()
    run = comparison_run(client)
    status = run.info.status if run else "no comparison run"
    ended = run and run.info.end_time
    in_run = (run.info.end_time - run.info.start_time) / 1000 if ended else float("nan")
    print(
        f"compare --all-finished: exit {result.returncode}, {status}, wall time {wall:.1f} s "
        f"(process start to exit), of which the comparison run {in_run:.1f} s; "
        f"{wall / TARGET_SECONDS:.2f}x the {TARGET_SECONDS:.0f} s target (for {TARGET_RUNS} runs)"
    )
    if result.returncode != 0 or status != "FINISHED":
        print(result.stdout[-3000:] + result.stderr[-3000:])
        return 1
    print(f"  reading the runs (find_runs) in a warm process: {query_seconds():.2f} s")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # after the timing
    report = report_rows(client, run, tmp)
    print("  " + summary(report, run))
    print("\n".join("  " + line for line in result.stdout.strip().splitlines()[-2:]))
    return 0 if len(report) == report["run_id"].nunique() == runs else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=TARGET_RUNS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data-dir", default=str(PROJECT / "data"))
    args = parser.parse_args()
    if args.runs < len(CONFIGS):
        parser.error(f"--runs must be at least {len(CONFIGS)}, one per configuration")
    flush_denormals()  # as the entry points do, first thing in the process
    data_dir = str(Path(args.data_dir).absolute())  # the store's folder becomes the cwd
    Mnist().ensure(data_dir, log=lambda _: None)
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    with tempfile.TemporaryDirectory(prefix="compare-bench-") as tmp:
        os.chdir(tmp)  # the store's artifacts go to ./mlruns: here, not where we started
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        trained, copied = fill(args.runs, data_dir, args.epochs)
        print(
            f"store: {args.runs} finished training runs of {args.epochs} epochs "
            f"({len(CONFIGS)} trained, {args.runs - len(CONFIGS)} copies), filled in "
            f"{trained + copied:.0f} s (training {trained:.0f} s, copies {copied:.1f} s)"
        )
        code = compare_and_check(data_dir, args.runs, tmp)
        os.chdir(PROJECT)  # out of the folder before it goes
    sys.exit(code)


if __name__ == "__main__":
    main()
