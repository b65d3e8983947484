"""Steps as their own processes: `python -m tracking.cli train` in a run the sweep made for
the step (with the tags and parameters `mlflow run -e train` would give it), started without
waiting, watched until they exit, stopped together on a stop signal. The sweep uses this
for parallel steps. Starting the training command itself, not `mlflow run`, spares each
step a second Python process that imports MLflow (about 4.5 s a step on a 2-core host).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
from mlflow import MlflowClient
from mlflow.environment_variables import (
    MLFLOW_EXPERIMENT_ID,
    MLFLOW_RUN_ID,
    MLFLOW_TRACKING_URI,
)

from pipeline.config import one_line
from tracking import names, runs
from tracking.steps import Job

POLL_SECONDS = 0.2  # how often the sweep looks at its running steps and for a stop signal
STOP_WAIT_SECONDS = 120  # for stopped steps to record their end (they stop within a step)
FAILURE_CHARS = 300  # of a failed step's recorded reason, in the sweep's final error


@dataclass(frozen=True)
class Launched:
    """A step's training process, started without waiting, and its run."""

    label: str
    run_id: str
    process: subprocess.Popen

    def poll(self) -> int | None:
        return self.process.poll()


def train_command(job: Job) -> list[str]:
    """The command the step's entry point runs (MLproject's), with the step's parameters."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in job.params.items()]
    return [sys.executable, "-m", "tracking.cli", "train", "--model-kind", job.request.model.kind,
            *flags]  # fmt: skip


def launch(job: Job, experiment_id: str, parent_run_id: str, tracking_uri: str) -> Launched:
    """Make the step's run, then start its training process in it (as `mlflow run` does:
    the run's id, experiment and store in the environment)."""
    run_id = runs.create_child_run(experiment_id, parent_run_id, job.label, job.request.source_tags)
    env = {
        **os.environ,
        MLFLOW_RUN_ID.name: run_id,
        MLFLOW_EXPERIMENT_ID.name: experiment_id,
        MLFLOW_TRACKING_URI.name: tracking_uri,
    }
    try:  # its own process group: a stop signal goes to it and its children only
        process = subprocess.Popen(
            train_command(job), cwd=runs.PROJECT_ROOT, env=env, start_new_session=True
        )
    except Exception as exc:  # its process did not start: no run may stay RUNNING
        runs.end_if_running(run_id, "FAILED", f"its process did not start: {one_line(exc)}")
        raise
    return Launched(job.label, run_id, process)


def wait_any(running: list[Launched]) -> list[tuple[Launched, int]]:
    """Wait until at least one running process exits; return those that did, with their
    exit codes. On a stop signal, pass it on (SIGTERM: each ends its run KILLED), wait for
    them, then raise."""
    while True:
        if runs.stop_requested():
            stop_all(running)
            runs.stop_if_requested()
        done = [(launched, code) for launched in running if (code := launched.poll()) is not None]
        if done:
            return done
        time.sleep(POLL_SECONDS)


def stop_all(running: list[Launched]) -> None:
    """SIGTERM every running step (its process group) and wait until the training
    processes have ended their runs KILLED."""
    processes = []
    for launched in running:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            processes.append(psutil.Process(launched.process.pid))
            os.killpg(launched.process.pid, signal.SIGTERM)
    psutil.wait_procs(processes, timeout=STOP_WAIT_SECONDS)
    for launched in running:  # a step that had not yet set up its signal handling
        runs.end_if_running(launched.run_id, "KILLED", "stopped with the sweep before it started")


def settle(launched: Launched, returncode: int) -> bool:
    """Whether an exited step's run FINISHED (runs.end_exited decides); says so when its
    process exited non-zero all the same."""
    status = runs.end_exited(launched.run_id, returncode)
    if status == "FINISHED" and returncode != 0:
        print(
            f"warning: {launched.label}'s run FINISHED, but its process exited with "
            f"code {returncode}: see its output above",
            flush=True,
        )
    return status == "FINISHED"


def report_failure(launched: Launched, returncode: int) -> str:
    """Print why a step failed (its run's recorded reason) and return its label with it."""
    reason = MlflowClient().get_run(launched.run_id).data.tags.get(names.TAG_FAILURE, "")
    reason = reason or "no reason recorded: see the step's output above"
    print(f"{launched.label} failed (exit code {returncode}): {reason}", flush=True)
    if "database is locked" in reason:
        print(
            "hint: parallel steps share one SQLite file, and SQLite let one wait too long; "
            "run again with parallel=1 (finished steps are reused), or use a tracking "
            "server (docs/team-setup.md)",
            flush=True,
        )
    return failure_line(launched.label, reason)


def failure_line(label: str, reason: str) -> str:
    """A failed step with the start of its reason, for the sweep's final error."""
    return f"{label} ({reason[:FAILURE_CHARS]})"


def share_cores(parallel: int) -> None:
    """Split the cores among parallel steps (torch reads OMP_NUM_THREADS when it starts)
    unless the user set the thread count."""
    if parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
