"""The `main` entry point: every latent size and the linear baseline as child runs of
one parent run, each through `mlflow run` so that it is a self-contained MLflow project run,
then the `compare` entry point on them, the same way."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import mlflow
from mlflow.exceptions import ExecutionException

from pipeline.config import DataConfig, TrainConfig
from pipeline.data import ensure_mnist
from tracking import names
from tracking.runs import PROJECT_ROOT, code_version, log_new_params, tracked_run


@dataclass(frozen=True)
class Step:
    entry_point: str
    kind: str
    latent_dim: int

    @property
    def name(self) -> str:
        return names.run_name(self.kind, self.latent_dim)


class SweepError(RuntimeError):
    """One or more training steps failed."""


def sweep_steps(latent_dims: tuple[int, ...], linear_dim: int) -> list[Step]:
    return [Step("train", "conv", d) for d in latent_dims] + [
        Step("train_linear", "linear", linear_dim)
    ]


def step_parameters(step: Step, data: DataConfig, train: TrainConfig, registered: str) -> dict:
    """The entry point's parameters, as strings, exactly as MLflow will store them."""
    return {
        "latent_dim": step.latent_dim,
        "epochs": train.epochs,
        "lr": train.lr,
        "batch_size": train.batch_size,
        "seed": train.seed,
        "device": train.device,
        "max_restarts": train.max_restarts,
        "data_dir": data.data_dir,
        "train_limit": data.train_limit or 0,
        "test_limit": data.test_limit or 0,
        "registered_model": registered,
    }


def _run_step(step: Step, params: dict, experiment_id: str) -> str:
    return _run_entry_point(step.entry_point, params, experiment_id, step.name)


def _run_entry_point(
    entry_point: str, params: dict, experiment_id: str, run_name: str | None = None
) -> str:
    submitted = mlflow.projects.run(
        str(PROJECT_ROOT),
        entry_point=entry_point,
        parameters={k: str(v) for k, v in params.items()},
        experiment_id=experiment_id,
        run_name=run_name,
        env_manager="local",  # not inherited from the outer `mlflow run`
        synchronous=True,
    )
    return submitted.run_id


def run_sweep(
    latent_dims: tuple[int, ...],
    linear_dim: int,
    data: DataConfig,
    train: TrainConfig,
    registered_model: str,
) -> str:
    """Train every step as a child run of a dated parent run; returns the parent's run id."""
    steps = sweep_steps(latent_dims, linear_dim)
    tags = {names.TAG_ROLE: names.ROLE_SWEEP, names.TAG_CODE_VERSION: code_version()}
    name = "sweep-" + datetime.now().strftime("%Y-%m-%d-%H%M%S")
    with tracked_run(name, tags) as parent:
        log_new_params({"latent_dims": ",".join(map(str, latent_dims)), "linear_dim": linear_dim})
        ensure_mnist(data.data_dir)  # fetch once, before the children start
        failed = []
        start = time.perf_counter()
        for i, step in enumerate(steps, 1):
            print(f"\n=== [{i}/{len(steps)}] {step.name} ===", flush=True)
            params = step_parameters(step, data, train, registered_model)
            try:
                _run_step(step, params, parent.info.experiment_id)
            except ExecutionException as exc:
                print(f"{step.name} failed: {exc}", flush=True)
                failed.append(step.name)
        mlflow.log_metric("sweep_seconds", time.perf_counter() - start)
        problems = []
        if failed:
            problems.append(
                f"{len(failed)} of {len(steps)} training steps failed: {', '.join(failed)}"
            )
        # Compare whatever finished: the report lists the failed runs as excluded.
        if len(failed) < len(steps) and not _compare(
            parent.info.run_id, parent.info.experiment_id, data, registered_model
        ):
            problems.append("the comparison failed")
        if problems:
            raise SweepError("; ".join(problems))
        return parent.info.run_id


def _compare(parent_run_id: str, experiment_id: str, data: DataConfig, registered: str) -> bool:
    """The `compare` entry point on this sweep's runs; returns whether it succeeded.

    Run through `mlflow run` like the training steps rather than called in-process: the
    comparison run records its entry point and parameters like any other step, and is
    rerun by the same command (`mlflow run . -e compare -P parent_run_id=...`)."""
    print("\n=== compare ===", flush=True)
    params = {"parent_run_id": parent_run_id, "registered_model": registered}
    try:
        _run_entry_point("compare", {**params, "data_dir": data.data_dir}, experiment_id)
    except ExecutionException as exc:
        print(f"compare failed: {exc}", flush=True)
        return False
    return True
