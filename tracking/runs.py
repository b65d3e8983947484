"""Run lifecycle: every run ends FINISHED, FAILED (with the reason) or KILLED, never RUNNING."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.environment_variables import (
    MLFLOW_EXPERIMENT_ID,
    MLFLOW_EXPERIMENT_NAME,
    MLFLOW_RUN_ID,
)
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags

from pipeline.config import one_line
from tracking import names
from tracking.host import host_tags
from tracking.system_metrics import log_a_sample_at_least

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KEEP_KILLED_SECONDS = 60  # how long guard_killed_status guards the KILLED status
KILLED_REASONS = ("interrupted", "Terminated", "KeyboardInterrupt")  # see tracked_run
# MLflow announces every start and stop of its system-metrics sampler; its warnings stay.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


class WorkError(RuntimeError):
    """Work that failed with every failure recorded on its runs and printed as it
    happened: the command ends with this one-line summary, exit code 1, no traceback."""


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (as `mlflow run` sends
    to its child when it is interrupted), so that the run can end KILLED."""


# Stop signals are deferred: the handler records them, and the main thread raises at the
# next safe point (every training step, between phases). An exception raised at an
# arbitrary instruction can land inside MLflow's database session or a lock of its
# logging queue, and then the run cannot be ended properly or the process hangs. Code
# that calls no MLflow and holds no lock (data loading, pure computation, waiting for a
# child process) runs inside `interruptible()`, where the signal raises at once.
_stop_signal: list[str] = []  # names of the stop signals received, in order
_raise_at_once = 0  # > 0 while the main thread is inside interruptible()


def _stop_exception() -> BaseException:
    first = _stop_signal[0]
    return KeyboardInterrupt() if first == "SIGINT" else Terminated(f"terminated by signal {first}")


def _on_stop_signal(signum, frame) -> None:
    """Record the signal; raise only the first one, and only inside interruptible(), so
    that a second one (Ctrl-C under `mlflow run` brings SIGINT, then SIGTERM) cannot cut
    the run's cleanup short."""
    _stop_signal.append(signal.Signals(signum).name)
    if len(_stop_signal) == 1 and _raise_at_once:
        raise _stop_exception()


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)


@contextmanager
def handling_stop_signals() -> Iterator[None]:
    """install_signal_handlers for a block of a process that lives on after it (a Ray
    worker runs one task after another): no signal of an earlier block counts, and the
    process's own handlers come back at the end."""
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _stop_signal.clear()
    install_signal_handlers()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
        _stop_signal.clear()


def stop_requested() -> bool:
    return bool(_stop_signal)


def stop_if_requested() -> None:
    """A safe point (also the training loop's step callback): raise if a stop signal came."""
    if _stop_signal:
        raise _stop_exception()


@contextmanager
def interruptible() -> Iterator[None]:
    """Run a block in which a stop signal raises at once; see the comment above."""
    global _raise_at_once
    stop_if_requested()
    _raise_at_once += 1
    try:
        yield
    finally:
        _raise_at_once -= 1


def _finish(run_id: str, status: str, reason: str | None) -> None:
    """Record the reason and end the run; a tracking failure here must not hide the cause.
    The run is always taken off MLflow's stack of active runs, so that MLflow's exit hook
    cannot end it FINISHED instead."""
    log_a_sample_at_least(run_id)
    if reason:
        try:
            MlflowClient().set_tag(run_id, names.TAG_FAILURE, reason)
        except Exception as exc:  # the original exception is re-raised by the caller
            print(f"warning: could not record why run {run_id} ended: {one_line(exc)}")
    try:
        mlflow.end_run(status)
    except Exception as exc:
        try:  # once more, on a fresh client
            MlflowClient().set_terminated(run_id, status)
        except Exception:
            print(f"warning: could not mark run {run_id} {status}: {one_line(exc)}")


@contextmanager
def tracked_run(
    run_name: str | None,
    tags: dict[str, str],
    run_id: str | None = None,
    system_metrics: bool = False,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or, under `mlflow run`, take over; or, given run_id, reopen) a run, tag it
    with the host it runs on, and end it with the right status: FINISHED on success,
    KILLED on Ctrl-C or SIGTERM, FAILED with the reason otherwise. A run started while
    another is open (a sweep's steps and comparison) is its child. With system_metrics,
    MLflow samples CPU, memory (and any GPU) into the run while it is open, once at least."""
    run = mlflow.start_run(
        run_id=run_id,
        run_name=run_name,
        nested=mlflow.active_run() is not None,
        log_system_metrics=True if system_metrics else None,
    )
    run_id = run.info.run_id
    try:
        mlflow.set_tags({**host_tags(), **tags})
        stop_if_requested()  # a signal that came while the run was being created
        yield run
    except (KeyboardInterrupt, Terminated) as exc:
        _finish(run_id, "KILLED", one_line(exc) if str(exc) else "interrupted (Ctrl-C)")
        raise
    except BaseException as exc:
        _finish(run_id, "FAILED", one_line(exc))
        raise
    else:
        log_a_sample_at_least(run_id)
        mlflow.end_run("FINISHED")


def guard_killed_status(run_id: str | None) -> None:
    """Under `mlflow run`, keep the run KILLED once `mlflow run` has exited: on Ctrl-C
    MLflow 3.17 marks it FAILED unless terminated, but compares the status string with
    integer codes, so it overwrites our KILLED. A detached process (this module's main)
    waits for `mlflow run` to exit and puts KILLED back. Called directly: nothing."""
    if not run_id:
        return
    subprocess.Popen(
        [sys.executable, "-m", "tracking.runs", run_id, str(os.getppid())],
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _restore_killed(run_id: str, pid: int) -> None:
    """Wait (up to KEEP_KILLED_SECONDS) for process pid, `mlflow run`, to exit, then turn
    the run back to KILLED if it overwrote that with FAILED."""
    deadline = time.monotonic() + KEEP_KILLED_SECONDS
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    client = MlflowClient()
    run = client.get_run(run_id)
    reason = run.data.tags.get(names.TAG_FAILURE, "")
    if run.info.status == "FAILED" and reason.startswith(KILLED_REASONS):
        client.set_terminated(run_id, "KILLED", end_time=run.info.end_time)


def fail_pending_run(message: str) -> None:
    """Under `mlflow run` the run exists before our command starts: when input is rejected
    before any work, end that run FAILED with the message. Called directly: nothing to do."""
    if MLFLOW_RUN_ID.get():
        end_if_running(MLFLOW_RUN_ID.get(), "FAILED", message)


def end_if_running(run_id: str, status: str, reason: str) -> str:
    """End a run its process left RUNNING (it died, or was stopped before it could handle
    the signal) with `status` and the reason; return the run's status."""
    client = MlflowClient()
    current = client.get_run(run_id).info.status
    if current != "RUNNING":
        return current
    client.set_tag(run_id, names.TAG_FAILURE, reason)
    client.set_terminated(run_id, status)
    return status


def end_exited(run_id: str, returncode: int) -> str:
    """The status of a run whose process has exited; one left RUNNING (the process died)
    ends FAILED with the reason. A FINISHED run counts whatever the exit code: the
    training process ends its run FINISHED only once all is recorded."""
    reason = f"the process exited with code {returncode} before ending its run"
    return end_if_running(run_id, "FAILED", reason)


def now_ms() -> int:
    return int(time.time() * 1000)


def create_child_run(
    experiment_id: str, parent_run_id: str, name: str, tags: dict[str, str]
) -> str:
    """A RUNNING child run of the parent, made here for a step that trains elsewhere (its
    own process, a Ray task), with the tags start_run gives a run (user, source) under
    `tags`. Returns its id."""
    tags = resolve_tags({names.TAG_PARENT_RUN: parent_run_id, **tags})
    return MlflowClient().create_run(experiment_id, run_name=name, tags=tags).info.run_id


EXPERIMENT_DESCRIPTION = f"""How an autoencoder's latent size trades compression for \
reconstruction quality, on MNIST and on any image data.

- **Training runs** (`conv-d100-s0`: kind, latent size, seed; other datasets' runs begin \
with the dataset's name, and every run has the tag `{names.TAG_DATASET}`) log per-epoch \
train and test MSE, reconstructions, parameter counts, and a model named after its \
configuration.
- **Sweeps** (`sweep-…`) are the parents of the training runs of one `main` job.
- **Comparisons** (`comparison-…`) hold the report: open `study.html` in Artifacts.

Each dataset has a registered model, `<dataset>-autoencoder` (MNIST's is \
`{names.DEFAULT_REGISTERED_MODEL}`), with an alias per training run and \
`{names.CHAMPION_ALIAS}` for the recommended one."""


def choose_experiment() -> str:
    """Point this process's new runs at an experiment and return its id. MLflow's own
    choice wins (the run `mlflow run` made, MLFLOW_EXPERIMENT_ID or _NAME); otherwise the
    study's experiment, created if missing. The experiment gets the training-runs view and
    a description where it has none (a user's own are kept)."""
    if MLFLOW_RUN_ID.get():
        experiment_id = MlflowClient().get_run(MLFLOW_RUN_ID.get()).info.experiment_id
    elif MLFLOW_EXPERIMENT_ID.get():
        experiment_id = MLFLOW_EXPERIMENT_ID.get()
        mlflow.set_experiment(experiment_id=experiment_id)
    else:
        name = MLFLOW_EXPERIMENT_NAME.get() or names.EXPERIMENT_NAME
        experiment_id = mlflow.set_experiment(name).experiment_id
    client = MlflowClient()
    present = client.get_experiment(experiment_id).tags
    wanted = {
        names.TAG_EXPERIMENT_KIND: names.EXPERIMENT_KIND,
        names.TAG_DESCRIPTION: EXPERIMENT_DESCRIPTION,
    }
    for key, value in wanted.items():
        if key not in present:
            client.set_experiment_tag(experiment_id, key, value)
    return experiment_id


UI_PORT = 5000  # `mlflow ui`'s default


def ui_hint(experiment_id: str) -> str:
    """Where to browse an experiment's training runs. MLflow 3.17's UI opens an experiment
    on its GenAI overview unless the address asks for the machine-learning view."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"browse the runs: {uri.rstrip('/')}/{page}"
    return (
        f"browse the runs: `mlflow ui --backend-store-uri {uri}`, then open "
        f"http://127.0.0.1:{UI_PORT}/{page}"
    )


def describe_run(markdown: str, run_id: str | None = None) -> None:
    """The run's Description in the UI (the active run's unless run_id is given)."""
    if run_id is None:
        mlflow.set_tag(names.TAG_DESCRIPTION, markdown)
    else:
        MlflowClient().set_tag(run_id, names.TAG_DESCRIPTION, markdown)


def append_tag_line(key: str, line: str) -> None:
    """Add a line to a tag of the active run that keeps one line per event."""
    run_id = mlflow.active_run().info.run_id
    previous = MlflowClient().get_run(run_id).data.tags.get(key)
    mlflow.set_tag(key, f"{previous}\n{line}" if previous else line)


def log_datasets(datasets: dict[str, mlflow.data.Dataset]) -> None:
    """Link each dataset to the active run under its context (training, testing).
    An experiment keeps one row per dataset, which MLflow finds or else inserts. Runs
    starting together (a parallel sweep) can all miss it and insert it together: all but
    one fail on the unique constraint, and nothing of theirs is written. Logging again
    then finds the row, and never links it twice, so one retry is safe."""
    for context, dataset in datasets.items():
        try:
            mlflow.log_input(dataset, context=context)
        except MlflowException:
            mlflow.log_input(dataset, context=context)


def log_new_params(params: dict[str, object]) -> None:
    """Log params the run does not have yet. `mlflow run` has already logged the entry
    point's parameters as the user typed them ("1e-3"); logging the parsed value
    ("0.001") again would be rejected as a change, and the two mean the same."""
    run = mlflow.active_run()
    existing = MlflowClient().get_run(run.info.run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def code_version() -> str:
    """The git commit, with "-dirty-" and a hash of the difference when the project's
    tracked files differ from it (so two different edits never share a version), else a
    hash of the project's Python sources."""
    try:
        commit = _git("rev-parse", "HEAD")
        diff = _git("diff", "HEAD", "--", "pipeline", "tracking", "MLproject")
    except (OSError, subprocess.CalledProcessError):
        digest = hashlib.sha256()
        for package in ("pipeline", "tracking"):
            for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
                digest.update(path.read_bytes())
        return "src-" + digest.hexdigest()[:12]
    if not diff:
        return commit
    return f"{commit}-dirty-{hashlib.sha256(diff.encode()).hexdigest()[:12]}"


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


if __name__ == "__main__":  # RUN_ID PID: see guard_killed_status
    _restore_killed(sys.argv[1], int(sys.argv[2]))
