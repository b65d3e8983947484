"""The `main` entry point: every latent size and the linear baseline as child runs of
one parent run, then the `compare` entry point on them.

With parallel=1 (the default) the sweep trains each step and compares in its own process,
one after the other: a step's run gets the tags and parameters that `mlflow run -e train`
would give it (source, git commit, entry point), and is rerun by that command, but pays no
process start, imports or project launch (about 7 s a step). With parallel > 1 each step
is its own `mlflow run` process, `parallel` at a time.

A sweep is idempotent: a step whose configuration already has a FINISHED run (same entry
point, same parameters as MLflow stores them, same dataset digest, same code version) is
not trained again but taken over, unless `force`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.utils import mlflow_tags

from pipeline.config import (
    CompareConfig,
    DataConfig,
    ModelConfig,
    SweepConfig,
    TrainConfig,
    one_line,
    to_params,
)
from pipeline.data import digest_for_limits, ensure_mnist
from tracking import names, runs
from tracking.registry import note_pickle_format, set_alias

POLL_SECONDS = 0.2  # how often the sweep looks at its running steps and for a stop signal
REUSE_CANDIDATES = 100  # newest runs of one configuration examined for reuse
STOP_WAIT_SECONDS = 120  # for stopped steps to record their end (they stop within a step)
FAILURE_CHARS = 300  # of a failed step's recorded reason, in the sweep's final error
# What `mlflow run` records of the project on the runs it makes (the sweep's own run has
# them): given to the runs the sweep makes in its own process, with their entry point.
SOURCE_TAGS = (
    mlflow_tags.MLFLOW_SOURCE_NAME,
    mlflow_tags.MLFLOW_SOURCE_TYPE,
    mlflow_tags.MLFLOW_GIT_COMMIT,
    mlflow_tags.MLFLOW_GIT_REPO_URL,
    mlflow_tags.MLFLOW_GIT_BRANCH,
    mlflow_tags.MLFLOW_PROJECT_BACKEND,
    mlflow_tags.MLFLOW_PROJECT_ENV,
)


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


@dataclass(frozen=True)
class SweepRequest:
    """A sweep: what it trains, on which data, how, and the registered model it fills."""

    sweep: SweepConfig
    data: DataConfig
    train: TrainConfig
    registered_model: str = names.DEFAULT_REGISTERED_MODEL

    def steps(self) -> list[Step]:
        """Every configuration for the first seed, then every one for the next: a sweep
        stopped early has whole seeds."""
        sweep = self.sweep
        configs = [("conv", d) for d in sweep.latent_dims] + [("linear", sweep.linear_dim)]
        return [Step(kind, d, seed) for seed in sweep.seeds for kind, d in configs]

    def step_parameters(self, step: Step) -> dict[str, str]:
        """The step's entry point parameters, as strings, exactly as MLflow stores them."""
        model = ModelConfig(step.kind, step.latent_dim)
        train = replace(self.train, seed=step.seed)
        params = to_params(model, train, self.data, skip=("model_kind",))
        params["registered_model"] = self.registered_model
        return {k: str(v) for k, v in params.items()}


def source_tags(entry_point: str) -> dict[str, str]:
    """The tags `mlflow run` gives a run of this project's `entry_point`: the active
    (sweep) run's source tags, with that entry point."""
    sweep = MlflowClient().get_run(mlflow.active_run().info.run_id).data.tags
    found = {key: sweep[key] for key in SOURCE_TAGS if key in sweep}
    return {**found, names.TAG_ENTRY_POINT: entry_point}


def _train_here(request: SweepRequest, step: Step) -> None:
    """Train the step in this process, in a child run of the active (sweep) run."""
    from tracking.training import TrainingRequest, train_tracked

    train_tracked(
        TrainingRequest(
            ModelConfig(step.kind, step.latent_dim),
            request.data,
            replace(request.train, seed=step.seed),
            request.registered_model,
            source_tags=source_tags(step.entry_point),
        )
    )


@dataclass(frozen=True)
class _Launched:
    """An entry point's process, started by `mlflow.projects.run` without waiting."""

    label: str
    submitted: SubmittedRun

    def poll(self) -> int | None:
        return self.submitted.command_proc.poll()


def _launch(entry_point: str, params: dict, experiment_id: str, label: str) -> _Launched:
    started = runs.now_ms()
    try:
        submitted = mlflow.projects.run(
            str(runs.PROJECT_ROOT),
            entry_point=entry_point,
            parameters=params,
            experiment_id=experiment_id,
            run_name=label if entry_point != "compare" else None,
            env_manager="local",  # not inherited from the outer `mlflow run`
            synchronous=False,  # waited for by _wait, which passes a stop signal on
        )
    except Exception as exc:  # its process did not start: no run may stay RUNNING
        runs.fail_unstarted(experiment_id, entry_point, started, exc)
        raise
    return _Launched(label, submitted)


def _wait(running: list[_Launched]) -> list[tuple[_Launched, int]]:
    """Wait until at least one running process exits; return those that did, with their
    exit codes. On a stop signal, pass it on (SIGTERM: each ends its run KILLED), wait for
    them, then raise."""
    while True:
        if runs.stop_requested():
            _stop_all(running)
            runs.stop_if_requested()
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
        runs.end_if_running(
            launched.submitted.run_id, "KILLED", "stopped with the sweep before it started"
        )


def _settle(launched: _Launched, returncode: int) -> bool:
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


def _report_failure(launched: _Launched, returncode: int) -> str:
    """Print why a step failed (its run's recorded reason) and return its label with it."""
    reason = MlflowClient().get_run(launched.submitted.run_id).data.tags.get(names.TAG_FAILURE, "")
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


def run_sweep(request: SweepRequest) -> str:
    """Train every (configuration, seed) as a child run of a dated parent run,
    `parallel` at a time, taking over matching FINISHED runs unless `force`; then compare.
    Returns the parent's run id."""
    version = runs.code_version()
    tags = {names.TAG_ROLE: names.ROLE_SWEEP, names.TAG_CODE_VERSION: version}
    with runs.tracked_run(names.dated_run_name("sweep"), tags) as parent:
        steps = _begin(request)
        experiment_id = parent.info.experiment_id
        start = time.perf_counter()
        failed = _Steps(request, experiment_id, version).run(steps)
        mlflow.log_metric("sweep_seconds", time.perf_counter() - start)
        problems = []
        if failed:
            problems.append(
                f"{len(failed)} of {len(steps)} training steps failed: {', '.join(failed)}"
            )
        # Compare whatever finished: the report lists the failed runs as excluded.
        if len(failed) < len(steps) and not _compare(parent.info.run_id, request):
            problems.append("the comparison failed")
        print(runs.ui_hint(experiment_id), flush=True)
        if problems:
            raise SweepError("; ".join(problems))
        return parent.info.run_id


def _begin(request: SweepRequest) -> list[Step]:
    """Record the sweep's parameters and plan, fetch MNIST once for every step, and set up
    the steps' environment. Returns the steps."""
    sweep, steps = request.sweep, request.steps()
    runs.log_new_params(to_params(sweep))
    dims = ", ".join(map(str, sweep.latent_dims))
    runs.describe_run(
        f"Trains {len(steps)} runs (latent sizes {dims} and the linear baseline at "
        f"{sweep.linear_dim}, seeds {', '.join(map(str, sweep.seeds))}), then compares "
        "them: the comparison's table and recommendation replace this text."
    )
    note_pickle_format()  # once for every step
    with runs.interruptible():
        ensure_mnist(request.data.data_dir)  # fetch once, before the children start
    _share_cores(sweep.parallel)
    _own_environment()
    return steps


@dataclass
class _Steps:
    """The steps of one sweep, run `parallel` at a time."""

    request: SweepRequest
    experiment_id: str
    version: str
    reused: list[str] = field(default_factory=list)

    def run(self, steps: list[Step]) -> list[str]:
        """Run (or reuse) every step; returns the failed ones, each with its reason."""
        if self.request.sweep.parallel == 1:
            return self.run_here(steps)
        pending, running, failed = list(enumerate(steps, 1)), [], []
        while pending or running:
            while pending and len(running) < self.request.sweep.parallel:
                i, step = pending.pop(0)
                print(f"\n=== [{i}/{len(steps)}] {step.name} ===", flush=True)
                if not self.reuse(step):
                    params = self.request.step_parameters(step)
                    running.append(_launch(step.entry_point, params, self.experiment_id, step.name))
            for launched, code in _wait(running) if running else ():
                running.remove(launched)
                if not _settle(launched, code):
                    failed.append(_report_failure(launched, code))
        return failed

    def run_here(self, steps: list[Step]) -> list[str]:
        """Run (or reuse) every step in this process, one after the other; returns the
        failed ones, each with its reason. A stop signal ends the step's run and the
        sweep's KILLED."""
        failed = []
        for i, step in enumerate(steps, 1):
            print(f"\n=== [{i}/{len(steps)}] {step.name} ===", flush=True)
            if self.reuse(step):
                continue
            try:
                _train_here(self.request, step)
            except Exception as exc:  # its run ended FAILED with the reason: go on
                reason = one_line(exc)
                print(f"{step.name} failed: {reason}", flush=True)
                failed.append(f"{step.name} ({reason[:FAILURE_CHARS]})")
        return failed

    def reuse(self, step: Step) -> bool:
        """Take over the step's matching FINISHED run, if it has one and not `force`."""
        request = self.request
        if request.sweep.force:
            return False
        params = request.step_parameters(step)
        digest = digest_for_limits(request.data.train_limit, request.data.test_limit)
        found = reusable_run(step, params, self.experiment_id, digest, self.version)
        if not found:
            return False
        _reuse(found, step, request.registered_model)
        self.reused.append(found.info.run_id)
        mlflow.set_tag(names.TAG_REUSED_RUNS, ",".join(self.reused))
        return True


def _compare(parent_run_id: str, request: SweepRequest) -> bool:
    """The `compare` entry point on this sweep's runs, in this process; returns whether it
    succeeded. Its run records the entry point and parameters `mlflow run` would give it,
    and is rerun by `mlflow run . -e compare -P parent_run_id=...`."""
    from tracking.compare import run_compare
    from tracking.query import find_runs

    print("\n=== compare ===", flush=True)
    config = CompareConfig(data_dir=str(request.data.data_dir))
    params = {
        "parent_run_id": parent_run_id,
        "all_finished": "false",
        "margin": str(config.margin),
        "data_dir": config.data_dir,
        "registered_model": request.registered_model,
    }
    try:
        runset = find_runs(parent_run_id)
        run_compare(runset, config, request.registered_model, source_tags("compare"), params)
    except Exception as exc:  # its run (if it began) ended FAILED with the reason
        print(f"compare failed: {one_line(exc)}", flush=True)
        return False
    return True
