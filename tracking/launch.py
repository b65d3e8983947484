"""Steps as their own processes: `mlflow run` of an entry point, started without
waiting, watched until they exit, stopped together on a stop signal. The sweep uses this
for parallel steps."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.projects.submitted_run import SubmittedRun

from tracking import names, runs

POLL_SECONDS = 0.2  # how often the sweep looks at its running steps and for a stop signal
STOP_WAIT_SECONDS = 120  # for stopped steps to record their end (they stop within a step)
FAILURE_CHARS = 300  # of a failed step's recorded reason, in the sweep's final error


@dataclass(frozen=True)
class Launched:
    """An entry point's process, started by `mlflow.projects.run` without waiting."""

    label: str
    submitted: SubmittedRun

    def poll(self) -> int | None:
        return self.submitted.command_proc.poll()


def launch(entry_point: str, params: dict, experiment_id: str, label: str) -> Launched:
    started = runs.now_ms()
    try:
        submitted = mlflow.projects.run(
            str(runs.PROJECT_ROOT),
            entry_point=entry_point,
            parameters=params,
            experiment_id=experiment_id,
            run_name=label if entry_point != "compare" else None,
            env_manager="local",  # not inherited from the outer `mlflow run`
            synchronous=False,  # waited for by wait_any, which passes a stop signal on
        )
    except Exception as exc:  # its process did not start: no run may stay RUNNING
        runs.fail_unstarted(experiment_id, entry_point, started, exc)
        raise
    return Launched(label, submitted)


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
        runs.end_if_running(
            launched.submitted.run_id, "KILLED", "stopped with the sweep before it started"
        )


def settle(launched: Launched, returncode: int) -> bool:
    """Whether an exited step's run FINISHED (runs.end_exited decides); says so when its
    `mlflow run` exited non-zero all the same."""
    status = runs.end_exited(launched.submitted.run_id, returncode)
    if status == "FINISHED" and returncode != 0:
        print(
            f"warning: {launched.label}'s run FINISHED, but its `mlflow run` exited with "
            f"code {returncode}: see its output above",
            flush=True,
        )
    return status == "FINISHED"


def report_failure(launched: Launched, returncode: int) -> str:
    """Print why a step failed (its run's recorded reason) and return its label with it."""
    reason = MlflowClient().get_run(launched.submitted.run_id).data.tags.get(names.TAG_FAILURE, "")
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


def own_environment() -> None:
    """Launch the steps with this interpreter's environment: `mlflow.projects.run` starts
    `mlflow` by name, and `mlflow run` starts `python` by name, from PATH. Called as
    `.venv/bin/python -m tracking.cli sweep` with the virtualenv not on PATH, they would
    find no `mlflow` (or a Python without the project's dependencies)."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def share_cores(parallel: int) -> None:
    """Split the cores among parallel steps (torch reads OMP_NUM_THREADS when it starts)
    unless the user set the thread count."""
    if parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
