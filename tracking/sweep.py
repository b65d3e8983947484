"""The `main` entry point: every latent size and the linear baseline as child runs of
one parent run, each through `mlflow run` so that it is a self-contained MLflow project run,
then the `compare` entry point on them, the same way.

A sweep is idempotent: a step whose configuration already has a FINISHED run (same entry
point, same parameters as MLflow stores them, same dataset digest, same code version) is
not trained again but taken over, unless `force`. Steps run `parallel` at a time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.entities import Run

from pipeline.config import DataConfig, TrainConfig
from pipeline.data import digest_for_limits, ensure_mnist
from tracking import names
from tracking.registry import note_pickle_format, set_alias
from tracking.runs import (
    PROJECT_ROOT,
    code_version,
    describe_run,
    interruptible,
    log_new_params,
    stop_if_requested,
    stop_requested,
    tracked_run,
    ui_hint,
)

POLL_SECONDS = 0.2  # how often the sweep looks at its running steps and for a stop signal
REUSE_CANDIDATES = 100  # newest runs of one configuration examined for reuse
STOP_WAIT_SECONDS = 120  # for stopped steps to record their end (they stop within a step)
FAILURE_CHARS = 300  # of a failed step's recorded reason, in the sweep's final error


@dataclass(frozen=True)
class Step:
    kind: str
    latent_dim: int
    seed: int

    @property
    def entry_point(self) -> str:
        return names.TRAIN_ENTRY_POINTS[self.kind]

    @property
    def name(self) -> str:
        return names.run_name(self.kind, self.latent_dim, self.seed)


class SweepError(RuntimeError):
    """One or more training steps failed."""


def sweep_steps(
    latent_dims: tuple[int, ...], linear_dim: int, seeds: tuple[int, ...]
) -> list[Step]:
    """Every configuration for the first seed, then every one for the next: a sweep
    stopped early has whole seeds."""
    configs = [("conv", d) for d in latent_dims] + [("linear", linear_dim)]
    return [Step(kind, d, seed) for seed in seeds for kind, d in configs]


def step_parameters(step: Step, data: DataConfig, train: TrainConfig, registered: str) -> dict:
    """The entry point's parameters, as strings, exactly as MLflow will store them."""
    params = {
        "latent_dim": step.latent_dim,
        "epochs": train.epochs,
        "lr": train.lr,
        "batch_size": train.batch_size,
        "seed": step.seed,
        "device": train.device,
        "max_restarts": train.max_restarts,
        "data_dir": data.data_dir,
        "train_limit": data.train_limit or 0,
        "test_limit": data.test_limit or 0,
        "registered_model": registered,
    }
    return {k: str(v) for k, v in params.items()}


class _Launched:
    """An entry point's process, started by `mlflow.projects.run` without waiting."""

    def __init__(self, label: str, submitted) -> None:
        self.label, self.submitted = label, submitted

    @property
    def run_id(self) -> str:
        return self.submitted.run_id

    def poll(self) -> int | None:
        return self.submitted.command_proc.poll()


def _launch(entry_point: str, params: dict, experiment_id: str, label: str) -> _Launched:
    submitted = mlflow.projects.run(
        str(PROJECT_ROOT),
        entry_point=entry_point,
        parameters=params,
        experiment_id=experiment_id,
        run_name=label if entry_point != "compare" else None,
        env_manager="local",  # not inherited from the outer `mlflow run`
        synchronous=False,  # waited for by _wait, which passes a stop signal on
    )
    return _Launched(label, submitted)


def _wait(running: list[_Launched]) -> list[tuple[_Launched, int]]:
    """Wait until at least one running process exits; return those that did, with their
    exit codes. On a stop signal, pass it on (SIGTERM: each ends its run KILLED), wait for
    them, then raise."""
    while True:
        if stop_requested():
            _stop_all(running)
            stop_if_requested()
        done = [(launched, code) for launched in running if (code := launched.poll()) is not None]
        if done:
            return done
        time.sleep(POLL_SECONDS)


def _stop_all(running: list[_Launched]) -> None:
    """SIGTERM every running step (its `mlflow run` process group) and wait until the
    training processes themselves have ended their runs KILLED."""
    processes = []
    for launched in running:
        with contextlib.suppress(psutil.Error):
            pid = launched.submitted.command_proc.pid
            processes += psutil.Process(pid).children(recursive=True)
        launched.submitted.cancel()  # SIGTERM to the group; waits for `mlflow run` only
    psutil.wait_procs(processes, timeout=STOP_WAIT_SECONDS)
    for launched in running:  # a step that had not yet set up its signal handling
        _end_if_running(launched.run_id, "KILLED", "stopped with the sweep before it started")


def _settle(launched: _Launched, returncode: int) -> bool:
    """Whether an exited step's run FINISHED. A process that died without ending its run
    (killed, out of memory) leaves it RUNNING: end it FAILED with the reason, as `mlflow
    run` does for the runs it waits for. The training process ends its run FINISHED only
    once everything is recorded and registered, so a FINISHED run counts even if the
    `mlflow run` around it then exited non-zero (it says so)."""
    reason = f"the process exited with code {returncode} before ending its run"
    status = _end_if_running(launched.run_id, "FAILED", reason)
    if status == "FINISHED" and returncode != 0:
        print(
            f"warning: {launched.label}'s run FINISHED, but its `mlflow run` exited with "
            f"code {returncode}: see its output above",
            flush=True,
        )
    return status == "FINISHED"


def _end_if_running(run_id: str, status: str, reason: str) -> str:
    """End a run its process left RUNNING (it died, or was stopped before it could handle
    the signal) with `status` and the reason; return the run's status."""
    client = MlflowClient()
    current = client.get_run(run_id).info.status
    if current != "RUNNING":
        return current
    client.set_tag(run_id, names.TAG_FAILURE, reason)
    client.set_terminated(run_id, status)
    return status


def _report_failure(launched: _Launched, returncode: int) -> str:
    """Print why a step failed (its run's recorded reason) and return its label with it."""
    reason = MlflowClient().get_run(launched.run_id).data.tags.get(names.TAG_FAILURE, "")
    reason = reason or "no reason recorded: see the step's output above"
    print(f"{launched.label} failed (exit code {returncode}): {reason}", flush=True)
    if "database is locked" in reason:
        print(
            "hint: parallel steps share one SQLite file, and SQLite let one wait too long; "
            "run again with parallel=1 (finished steps are reused), or use a tracking "
            "server (README: team setup)",
            flush=True,
        )
    return f"{launched.label} ({reason[:FAILURE_CHARS]})"


def reusable_run(
    step: Step, params: dict[str, str], experiment_id: str, digest: str, version: str
) -> Run | None:
    """The newest FINISHED training run of the step's entry point with the same parameters
    (as MLflow stores them: strings), the same dataset digest and the same code version."""
    found = MlflowClient().search_runs(
        [experiment_id],
        f"tags.{names.TAG_ROLE} = '{names.ROLE_TRAIN}' and attributes.status = 'FINISHED' "
        f"and tags.{names.TAG_CODE_VERSION} = '{version}' "
        f"and tags.`{names.TAG_ENTRY_POINT}` = '{step.entry_point}' "
        f"and params.latent_dim = '{step.latent_dim}' and params.seed = '{step.seed}'",
        order_by=["attributes.start_time DESC"],
        max_results=REUSE_CANDIDATES,
    )
    for run in found:
        digests = {d.dataset.digest for d in run.inputs.dataset_inputs}
        same = all(run.data.params.get(k) == v for k, v in params.items())
        if same and digests == {digest} and names.TAG_REGISTERED_VERSION in run.data.tags:
            return run
    return None


def _reuse(run: Run, step: Step, registered: str) -> None:
    """Point the step's alias back at the reused run's model version."""
    version = run.data.tags[names.TAG_REGISTERED_VERSION]
    set_alias(registered, step.name, version)
    test_mse = run.data.metrics.get(names.FINAL_TEST_MSE, float("nan"))
    print(
        f"reusing FINISHED run {run.info.run_id} ({run.info.run_name}, test MSE "
        f"{test_mse:.5f}); models:/{registered}@{step.name} -> version {version}. "
        "force=true trains it again.",
        flush=True,
    )


def _own_environment() -> None:
    """Launch the steps with this interpreter's environment: `mlflow.projects.run` starts
    `mlflow` by name, and `mlflow run` starts `python` by name, from PATH. Called as
    `.venv/bin/python -m tracking.cli sweep` with the virtualenv not on PATH, they would
    find no `mlflow` (or a Python without the project's dependencies)."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _share_cores(parallel: int) -> None:
    """Split the cores among parallel steps (torch reads OMP_NUM_THREADS when it starts)
    unless the user set the thread count."""
    if parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))


def run_sweep(
    latent_dims: tuple[int, ...],
    linear_dim: int,
    seeds: tuple[int, ...],
    data: DataConfig,
    train: TrainConfig,
    registered_model: str,
    parallel: int = 1,
    force: bool = False,
) -> str:
    """Train every (configuration, seed) as a child run of a dated parent run, `parallel`
    at a time, taking over matching FINISHED runs unless `force`; returns the parent's
    run id."""
    steps = sweep_steps(latent_dims, linear_dim, seeds)
    version = code_version()
    tags = {names.TAG_ROLE: names.ROLE_SWEEP, names.TAG_CODE_VERSION: version}
    name = "sweep-" + datetime.now().strftime("%Y-%m-%d-%H%M%S")
    with tracked_run(name, tags) as parent:
        log_new_params(
            {
                "latent_dims": ",".join(map(str, latent_dims)),
                "linear_dim": linear_dim,
                "seeds": ",".join(map(str, seeds)),
                "parallel": parallel,
                "force": force,
            }
        )
        describe_run(
            f"Trains {len(steps)} runs (latent sizes {', '.join(map(str, latent_dims))} and the "
            f"linear baseline at {linear_dim}, seeds {', '.join(map(str, seeds))}), then "
            "compares them: the comparison's table and recommendation replace this text."
        )
        note_pickle_format()  # once for every step
        with interruptible():
            ensure_mnist(data.data_dir)  # fetch once, before the children start
        experiment_id = parent.info.experiment_id
        digest = digest_for_limits(data.train_limit, data.test_limit)
        _share_cores(parallel)
        _own_environment()
        start = time.perf_counter()
        pending, running, failed, reused = list(enumerate(steps, 1)), [], [], []
        while pending or running:
            while pending and len(running) < parallel:
                i, step = pending.pop(0)
                print(f"\n=== [{i}/{len(steps)}] {step.name} ===", flush=True)
                params = step_parameters(step, data, train, registered_model)
                found = not force and reusable_run(step, params, experiment_id, digest, version)
                if not found:
                    running.append(_launch(step.entry_point, params, experiment_id, step.name))
                else:
                    _reuse(found, step, registered_model)
                    reused.append(found.info.run_id)
                    mlflow.set_tag(names.TAG_REUSED_RUNS, ",".join(reused))
            for launched, code in _wait(running) if running else ():
                running.remove(launched)
                if not _settle(launched, code):
                    failed.append(_report_failure(launched, code))
        mlflow.log_metric("sweep_seconds", time.perf_counter() - start)
        problems = []
        if failed:
            problems.append(
                f"{len(failed)} of {len(steps)} training steps failed: {', '.join(failed)}"
            )
        # Compare whatever finished: the report lists the failed runs as excluded.
        if len(failed) < len(steps) and not _compare(
            parent.info.run_id, experiment_id, data, registered_model
        ):
            problems.append("the comparison failed")
        print(ui_hint(experiment_id), flush=True)
        if problems:
            raise SweepError("; ".join(problems))
        return parent.info.run_id


def _compare(parent_run_id: str, experiment_id: str, data: DataConfig, registered: str) -> bool:
    """The `compare` entry point on this sweep's runs; returns whether it succeeded.

    Run through `mlflow run` like the training steps rather than called in-process: the
    comparison run records its entry point and parameters like any other step, and is
    rerun by the same command (`mlflow run . -e compare -P parent_run_id=...`)."""
    print("\n=== compare ===", flush=True)
    params = {
        "parent_run_id": parent_run_id,
        "registered_model": registered,
        "data_dir": str(data.data_dir),
    }
    launched = _launch("compare", params, experiment_id, "compare")
    ((_, code),) = _wait([launched])
    if not _settle(launched, code):
        print(f"compare failed (exit code {code})", flush=True)
        return False
    return True
