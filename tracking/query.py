"""Finding the runs to compare and reading them into typed pandas frames (I/O only).

Runs are read only through MLflow's API, from whatever tracking URI and experiment are
active (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID or MLFLOW_EXPERIMENT_NAME, as for any
MLflow command). Parameters come back from MLflow as strings: PARAM_TYPES casts them,
here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.environment_variables import MLFLOW_EXPERIMENT_ID, MLFLOW_EXPERIMENT_NAME
from mlflow.exceptions import MlflowException

from pipeline.config import (
    DEFAULT_DATASET,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    param_name,
)
from tracking import names
from tracking.host import describe

FINISHED = "FINISHED"
PAGE_SIZE = 1000
HISTORY_METRICS = (names.TRAIN_MSE, names.TEST_MSE, names.TRAIN_EVAL_MSE)
SUMMARY_METRICS = (
    names.FINAL_TRAIN_MSE,
    names.FINAL_TEST_MSE,
    names.BEST_TEST_MSE,
    names.BEST_EPOCH,
    names.PARAMS_TOTAL,
    names.PARAMS_ENCODER,
    names.PARAMS_DECODER,
    names.TRAIN_SECONDS,
    names.RESTARTS,
    names.RESTARTS_CONSTANT,
    names.RESTARTS_PLATEAU,
    names.KNN_ACCURACY,
    names.SILHOUETTE,
    names.OUTPUT_STD,
)
# The one place where MLflow's string parameters get their real types: the training
# schema's fields as pandas dtypes ("Int64" keeps a missing value as <NA>, not a float).
# Flags stay text ("true"/"false"): the comparison only shows them.
DTYPES = {
    "int": "Int64",
    "float": "float64",
    "str": "string",
    "int | None": "Int64",
    "bool": "string",
}
PARAM_TYPES = {
    param_name(f): DTYPES[f.type] for c in (ModelConfig, TrainConfig, DataConfig) for f in fields(c)
}
USED = (names.PARAM_DEVICE_USED, names.PARAM_PRECISION_USED, names.PARAM_CUDA_GRAPHS_USED)
PARAM_TYPES.update(dict.fromkeys((*USED, names.PARAM_TF32_USED), "string"))  # logged by the run
PARAM_TYPES["registered_model"] = "string"


class NoRunsError(ConfigError):
    """Nothing to compare: bad input, rejected like a bad parameter (exit 2)."""


@dataclass(frozen=True)
class RunSet:
    """What a comparison reads: finished training runs, the ones left out, their curves."""

    runs: pd.DataFrame
    """One row per FINISHED training run: ids, name, start time, typed params, metrics."""
    excluded: pd.DataFrame
    """run_id, run_name, status, reason (failure_reason, shortened) and dataset of the
    training runs that did not finish."""
    histories: pd.DataFrame
    """Long format: run_id, metric, step, value for HISTORY_METRICS of the finished runs."""
    experiment_id: str
    source: str
    """Which runs these are, in words, e.g. "children of sweep sweep-... (<id>)"."""
    parent_run_id: str | None = None
    """The sweep (or other parent run) whose children these are."""


def current_experiment_id() -> str:
    """The experiment the project's commands use now: MLFLOW_EXPERIMENT_ID, else
    MLFLOW_EXPERIMENT_NAME, else the study's experiment (tracking.runs.choose_experiment)."""
    if MLFLOW_EXPERIMENT_ID.get():
        return MLFLOW_EXPERIMENT_ID.get()
    name = MLFLOW_EXPERIMENT_NAME.get() or names.EXPERIMENT_NAME
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        raise NoRunsError(
            f"no experiment named {name!r} at {mlflow.get_tracking_uri()}: run the main "
            "entry point first"
        )
    return experiment.experiment_id


def _search(experiment_id: str, filter_string: str, **kwargs) -> Iterator[Run]:
    client, token = MlflowClient(), None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, max_results=PAGE_SIZE, page_token=token, **kwargs
        )
        yield from page
        token = page.token
        if not token:
            return


def latest_sweep(experiment_id: str) -> Run:
    """The newest run tagged role=sweep in the experiment."""
    found = MlflowClient().search_runs(
        [experiment_id],
        f"tags.{names.TAG_ROLE} = '{names.ROLE_SWEEP}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not found:
        raise NoRunsError(
            f"no sweep run (tag {names.TAG_ROLE}={names.ROLE_SWEEP}) in experiment "
            f"{experiment_id} at {mlflow.get_tracking_uri()}: run the main entry point first, "
            "or pass --parent-run-id or --all-finished"
        )
    return found[0]


def get_run(run_id: str) -> Run:
    """The run, or NoRunsError naming the id and the tracking URI."""
    try:
        return MlflowClient().get_run(run_id)
    except MlflowException:
        raise NoRunsError(f"no run {run_id!r} at {mlflow.get_tracking_uri()}") from None


REASON_CHARS = 300  # of a run's failure_reason, in the report's list of excluded runs


def _reason(run: Run) -> str:
    """Why the run ended as it did (its failure_reason tag), shortened; "" if unknown."""
    reason = " ".join(run.data.tags.get(names.TAG_FAILURE, "").split())
    return reason if len(reason) <= REASON_CHARS else f"{reason[: REASON_CHARS - 3]}..."


def find_runs(parent_run_id: str | None = None, all_finished: bool = False) -> RunSet:
    """Training runs of the latest sweep (default), of a given parent run, or every one in
    the current experiment. Raises NoRunsError when none of them finished."""
    train_filter = f"tags.{names.TAG_ROLE} = '{names.ROLE_TRAIN}'"
    parent = None
    if all_finished:
        experiment_id = current_experiment_id()
        source = f"every finished training run of experiment {experiment_id}"
    else:
        parent = get_run(parent_run_id) if parent_run_id else latest_sweep(current_experiment_id())
        experiment_id = parent.info.experiment_id
        train_filter += f" and tags.`{names.TAG_PARENT_RUN}` = '{parent.info.run_id}'"
        source = f"children of {parent.info.run_name} ({parent.info.run_id})"
    found = list(_search(experiment_id, train_filter, order_by=["attributes.start_time ASC"]))
    if not all_finished:  # runs the sweep took over from earlier sweeps instead of training
        reused = parent.data.tags.get(names.TAG_REUSED_RUNS, "")
        found = [get_run(run_id) for run_id in reused.split(",") if run_id] + found
    finished = [r for r in found if r.info.status == FINISHED]
    if not finished:
        raise NoRunsError(
            f"no finished training runs to compare among the {source} "
            f"({len(found)} training runs, none FINISHED) at {mlflow.get_tracking_uri()}"
        )
    left_out = [r for r in found if r.info.status != FINISHED]
    excluded = pd.DataFrame(
        [(r.info.run_id, r.info.run_name, r.info.status, _reason(r), dataset_of(r))
         for r in left_out],
        columns=["run_id", "run_name", "status", "reason", "dataset"],
    )  # fmt: skip
    runs = runs_frame(finished)
    parent_id = parent.info.run_id if parent else None
    histories = metric_histories(runs["run_id"])
    return RunSet(runs, excluded, histories, experiment_id, source, parent_id)


def dataset_of(run: Run) -> str:
    """The name the run's dataset resolved to: its dataset tag, else its dataset parameter;
    runs from before datasets have neither and are MNIST's."""
    params, tags = run.data.params, run.data.tags
    return tags.get(names.TAG_DATASET) or params.get("dataset") or DEFAULT_DATASET


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One typed row per run: params cast by PARAM_TYPES, summary metrics as floats, the
    configuration's name ("conv-d100"), the host in words, and "dataset_name", the name its
    dataset resolved to (the "dataset" column is the parameter as given: a name or a
    folder; "mnist" for runs from before datasets)."""
    rows = []
    for run in runs:
        params, tags = run.data.params, run.data.tags
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
            "kind": params.get("model_kind", tags.get(names.TAG_KIND)),
            "registered_version": tags.get(names.TAG_REGISTERED_VERSION),
        }
        row.update({key: params.get(key) for key in PARAM_TYPES})
        row["dataset"] = row["dataset"] or DEFAULT_DATASET
        row["dataset_name"] = dataset_of(run)
        row["latent_dim"] = params.get("latent_dim", tags.get(names.TAG_LATENT))
        row["config"] = names.config_name(row["kind"], row["latent_dim"])
        row["host"] = describe(tags)
        row.update({key: run.data.metrics.get(key, float("nan")) for key in SUMMARY_METRICS})
        rows.append(row)
    frame = pd.DataFrame(rows).astype(PARAM_TYPES)
    return frame.astype(
        dict.fromkeys(["kind", "registered_version", "config", "host", "dataset_name"], "string")
    )


def metric_histories(run_ids: pd.Series) -> pd.DataFrame:
    """Every logged value of HISTORY_METRICS, one row per (run, metric, step)."""
    client = MlflowClient()
    rows = [
        (run_id, key, m.step, m.value)
        for run_id in run_ids
        for key in HISTORY_METRICS
        for m in client.get_metric_history(run_id, key)
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    return frame.astype({"step": "int64", "value": "float64"})
