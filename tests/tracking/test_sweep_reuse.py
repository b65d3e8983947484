"""Which FINISHED run a sweep step takes over: every one of the step's parameters must
match, the precision among them. Runs built in a real SQLite store in tmp_path."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np
import pytest

from pipeline.config import DataConfig, SweepConfig, TrainConfig
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import FORWARD_PRECISIONS, auto_precision, resolve_device
from tracking import names
from tracking.sweep import Step, SweepRequest, reusable_run

VERSION = "test-version"
DATA = DataConfig("./data", train_limit=1024, test_limit=256)
DIGEST = Mnist().digest(DATA.train_limit, DATA.test_limit)  # limits under the split sizes


def request(precision: str) -> SweepRequest:
    return SweepRequest(SweepConfig(latent_dims=(3,)), DATA, TrainConfig(precision=precision))


def finished_step_run(step: Step, params: dict[str, str]) -> str:
    """A FINISHED training run of the step as a sweep leaves it: its entry point, the
    step's parameters, its dataset and a registered version."""
    tags = {
        names.TAG_ROLE: names.ROLE_TRAIN,
        names.TAG_CODE_VERSION: VERSION,
        names.TAG_ENTRY_POINT: step.entry_point,
        names.TAG_REGISTERED_VERSION: "1",
    }
    dataset = mlflow.data.from_numpy(np.zeros((2, 2)), name="mnist-training", digest=DIGEST)
    with mlflow.start_run(run_name=step.name, tags=tags) as run:
        mlflow.log_params(params)
        mlflow.log_input(dataset, context="training")
    return run.info.run_id


@pytest.mark.parametrize(("trained", "wanted"), [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_run_of_one_precision_is_never_reused_for_the_other(store, monkeypatch, trained, wanted):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    step = request(trained).steps()[0]
    run_id = finished_step_run(step, request(trained).reuse_parameters(step))
    experiment = mlflow.get_run(run_id).info.experiment_id

    def reused(precision: str):
        params = request(precision).reuse_parameters(step)
        return reusable_run(step, params, experiment, DIGEST, VERSION)

    assert reused(trained).info.run_id == run_id  # the same step is taken over
    assert request(wanted).step_parameters(step)["precision"] == wanted
    assert reused(wanted) is None


@pytest.mark.parametrize("used", FORWARD_PRECISIONS)
def test_an_auto_run_is_reused_only_where_auto_trains_in_the_precision_it_used(
    store, monkeypatch, used
):
    """precision=auto trains in bf16 on a CPU with AMX: its run there is never taken over
    for an auto step on a host without AMX (or an fp32 step), and the other way round."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    auto = request("auto")
    step = auto.steps()[0]
    run_id = finished_step_run(step, {**auto.step_parameters(step), "precision_used": used})
    experiment = mlflow.get_run(run_id).info.experiment_id
    here = auto_precision(resolve_device(auto.train.device))
    assert auto.reuse_parameters(step)["precision_used"] == here
    found = reusable_run(step, auto.reuse_parameters(step), experiment, DIGEST, VERSION)
    assert (found is not None) == (used == here)
    assert (
        reusable_run(step, request(used).reuse_parameters(step), experiment, DIGEST, VERSION)
        is None
    )


def test_a_sweep_passes_its_precision_to_every_step():
    sweep = replace(request("bf16"), sweep=SweepConfig(latent_dims=(3, 10), seeds=(0, 1)))
    assert {sweep.step_parameters(s)["precision"] for s in sweep.steps()} == {"bf16"}


def test_a_ray_driver_without_the_steps_gpu_still_knows_their_precision():
    """device=cuda with backend=ray runs on GPU nodes; the driver may have no CUDA, and
    auto is fp32 on CUDA."""
    sweep = SweepRequest(SweepConfig(latent_dims=(3,)), DATA, TrainConfig(device="cuda"))
    assert sweep.reuse_parameters(sweep.steps()[0])["precision_used"] == "fp32"
