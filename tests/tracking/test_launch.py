"""A parallel sweep step as its own process, in the run the sweep made for it: the run has
the tags `mlflow run -e train` gives, and a process that cannot start leaves it FAILED,
not RUNNING."""

import sys

import mlflow
import pytest

from pipeline.config import DataConfig, ModelConfig, TrainConfig
from tracking import launch, names
from tracking.requests import TrainingRequest
from tracking.steps import Job

SOURCE = {"mlflow.source.type": "PROJECT", names.TAG_ENTRY_POINT: "train"}


def job() -> Job:
    request = TrainingRequest(
        ModelConfig("conv", 3), DataConfig(), TrainConfig(), source_tags=SOURCE
    )
    return Job("conv-d3-s0", "train", {"latent_dim": "3", "epochs": "1"}, request)


def test_the_command_is_the_entry_points_with_the_steps_parameters():
    cmd = launch.train_command(job())
    assert cmd[:6] == [sys.executable, "-m", "tracking.cli", "train", "--model-kind", "conv"]
    assert cmd[6:] == ["--latent-dim=3", "--epochs=1"]


def test_a_step_that_cannot_start_ends_its_run_failed(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    experiment_id = store.client.create_experiment("launch")
    monkeypatch.setattr(sys, "executable", str(store.root / "no-python-here"))
    with mlflow.start_run(experiment_id=experiment_id) as parent, pytest.raises(OSError):
        launch.launch(job(), experiment_id, parent.info.run_id, store.uri)
    (step,) = [r for r in store.runs() if r.info.run_id != parent.info.run_id]
    assert step.info.run_name == "conv-d3-s0" and step.info.status == "FAILED"
    assert step.data.tags[names.TAG_PARENT_RUN] == parent.info.run_id
    assert {k: step.data.tags[k] for k in SOURCE} == SOURCE
    reason = step.data.tags[names.TAG_FAILURE]
    assert reason.startswith("its process did not start: FileNotFoundError"), reason
