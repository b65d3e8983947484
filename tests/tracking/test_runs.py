"""Runs that start together race to create an experiment's one row per dataset: each run
still ends up linked to that one row, under its context."""

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mlflow
import numpy as np
import pytest
from mlflow.entities import DatasetInput, InputTag
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.dbmodels.models import SqlDataset
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from sqlalchemy import event
from sqlalchemy.orm import Session

from tracking import runs


def _datasets() -> dict[str, mlflow.data.Dataset]:
    rng = np.random.default_rng(0)
    return {
        context: mlflow.data.from_numpy(
            rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), name=f"mnist-{context}"
        )
        for context in ("training", "testing")
    }


@contextmanager
def _other_run_inserts_first(client, run_id: str, datasets: dict) -> Iterator[Callable[[], bool]]:
    """Just before this process inserts a dataset row, another run inserts the same
    datasets and commits: what a parallel sweep's step does when it is a moment ahead."""
    raced = []

    def insert_first(session, flush_context, instances) -> None:
        if raced or not any(isinstance(row, SqlDataset) for row in session.new):
            return
        raced.append(run_id)  # before logging: its own flush comes back here
        inputs = [
            DatasetInput(d._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
            for context, d in datasets.items()
        ]
        client.log_inputs(run_id, datasets=inputs)

    event.listen(Session, "before_flush", insert_first)
    try:
        yield lambda: bool(raced)
    finally:
        event.remove(Session, "before_flush", insert_first)


def _linked(client, run_id: str) -> dict[str, str]:
    """The run's datasets, by name, with the context each is linked under."""
    inputs = client.get_run(run_id).inputs.dataset_inputs
    contexts = [{t.key: t.value for t in i.tags}[MLFLOW_DATASET_CONTEXT] for i in inputs]
    return {i.dataset.name: context for i, context in zip(inputs, contexts, strict=True)}


@pytest.fixture
def two_runs(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    experiment_id = store.client.create_experiment("race")
    return [store.client.create_run(experiment_id).info.run_id for _ in range(2)]


def test_a_run_that_loses_the_race_for_the_dataset_rows_still_links_them(store, two_runs):
    this, other = two_runs
    datasets = _datasets()
    with (
        _other_run_inserts_first(store.client, other, datasets) as raced,
        mlflow.start_run(run_id=this),
    ):
        runs.log_datasets(datasets)
    assert raced()
    expected = {"mnist-training": "training", "mnist-testing": "testing"}
    assert _linked(store.client, this) == expected
    assert _linked(store.client, other) == expected
    with sqlite3.connect(store.root / "mlflow.db") as db:
        assert db.execute("SELECT name FROM datasets ORDER BY name").fetchall() == [
            ("mnist-testing",),
            ("mnist-training",),
        ]


def test_the_race_fails_a_single_attempt(store, two_runs):
    """What the retry is for: MLflow checks for the row, then inserts it."""
    this, other = two_runs
    datasets = _datasets()
    with (
        _other_run_inserts_first(store.client, other, datasets),
        mlflow.start_run(run_id=this),
        pytest.raises(MlflowException, match="UNIQUE constraint failed: datasets"),
    ):
        mlflow.log_input(datasets["training"], context="training")
