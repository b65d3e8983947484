"""A parallel sweep step whose process cannot start leaves no run RUNNING: `mlflow.projects.run`
creates the step's run before it starts `mlflow run`."""

import mlflow
import pytest

from tracking import launch, names


def test_a_step_that_cannot_start_ends_its_run_failed(store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.chdir(store.root)
    experiment_id = store.client.create_experiment("launch")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # no `mlflow` to start
    with mlflow.start_run(experiment_id=experiment_id) as parent, pytest.raises(FileNotFoundError):
        launch.launch("train", {"latent_dim": "3"}, experiment_id, "conv-d3-s0")
    (step,) = [r for r in store.runs() if r.info.run_id != parent.info.run_id]
    assert step.data.tags[names.TAG_ENTRY_POINT] == "train"
    assert step.info.status == "FAILED"
    reason = step.data.tags[names.TAG_FAILURE]
    assert reason.startswith("its process did not start: FileNotFoundError"), reason
