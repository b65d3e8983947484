"""Sweeps as a team runs them: stopped and started again, rerun, forced, run in parallel.
Real `sweep` processes over a temporary SQLite store, real signals."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.tracking.conftest import BIN, Store, cli_command, cli_flags, small_args
from tracking import names

pytestmark = pytest.mark.slow


def sweep_args(mnist_dir, **overrides) -> list[str]:
    return cli_flags(small_args(mnist_dir, epochs=2, **overrides))


def training_runs(store: Store) -> list:
    return store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_TRAIN}'")


def compared_names(store: Store, sweep_run_id: str) -> list[str]:
    """Run names of what the sweep's comparison compared, from its tag."""
    comparisons = [
        r
        for r in store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_COMPARISON}'")
        if r.data.tags.get(names.TAG_PARENT_RUN) == sweep_run_id
    ]
    (comparison,) = comparisons
    ids = comparison.data.tags[names.TAG_COMPARED_RUNS].split(",")
    return sorted(store.client.get_run(run_id).info.run_name for run_id in ids)


def newest_sweep(store: Store):
    sweeps = store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_SWEEP}'")
    return max(sweeps, key=lambda r: r.info.start_time)


def wait_for_run(store: Store, name: str, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [r for r in training_runs(store) if r.info.run_name == name]
        if found:
            return found[0]
        time.sleep(0.2)
    log = (store.root / "process.log").read_text()[-3000:]
    raise AssertionError(f"no run {name} within {timeout} s:\n{log}")


def test_stopped_sweep_started_again_trains_only_what_is_missing(store, mnist_dir):
    args = sweep_args(mnist_dir, latent_dims="3,10")
    proc = store.popen(cli_command("sweep", *args))
    try:
        wait_for_run(store, "conv-d10-s0")  # conv-d3 has finished; conv-d10 is starting
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    statuses = {r.info.run_name: r.info.status for r in store.runs()}
    assert statuses.pop("conv-d3-s0") == "FINISHED"
    assert statuses.pop("conv-d10-s0") == "KILLED"  # stopped with the sweep, not orphaned
    assert set(statuses.values()) == {"KILLED"}  # the sweep itself
    (first,) = [r for r in training_runs(store) if r.info.run_name == "conv-d3-s0"]

    again = store.cli("sweep", *args, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"reusing FINISHED run {first.info.run_id}" in again.stdout
    sweep = newest_sweep(store)
    trained = [
        r
        for r in training_runs(store)
        if r.data.tags.get(names.TAG_PARENT_RUN) == (sweep.info.run_id)
    ]
    assert sorted(r.info.run_name for r in trained) == ["conv-d10-s0", "linear-d10-s0"]
    assert compared_names(store, sweep.info.run_id) == [
        "conv-d10-s0",
        "conv-d3-s0",
        "linear-d10-s0",
    ]
    version = store.client.get_model_version_by_alias(names.DEFAULT_REGISTERED_MODEL, "conv-d3-s0")
    assert version.run_id == first.info.run_id

    # Once more: everything is reused, nothing is trained.
    count = len(training_runs(store))
    third = store.cli("sweep", *args, timeout=900)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert third.stdout.count("reusing FINISHED run") == 3
    assert len(training_runs(store)) == count
    sweep = newest_sweep(store)
    assert compared_names(store, sweep.info.run_id) == [
        "conv-d10-s0",
        "conv-d3-s0",
        "linear-d10-s0",
    ]


def test_force_trains_again_and_changed_parameters_are_not_reused(store, mnist_dir):
    # Called as `.venv/bin/python -m tracking.cli sweep` with the virtualenv off PATH: the
    # steps must still find the virtualenv's `mlflow` and `python`.
    path = store.env["PATH"].split(os.pathsep)
    store.env["PATH"] = os.pathsep.join(p for p in path if p != str(BIN))
    args = sweep_args(mnist_dir, latent_dims="3")
    first = store.cli("sweep", *args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    forced = store.cli("sweep", *args, "--force")
    assert forced.returncode == 0, forced.stdout[-3000:] + forced.stderr[-3000:]
    assert "reusing" not in forced.stdout
    changed = store.cli("sweep", *sweep_args(mnist_dir, latent_dims="3", lr=0.002))
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "reusing" not in changed.stdout
    names_trained = sorted(r.info.run_name for r in training_runs(store))
    assert names_trained == ["conv-d3-s0"] * 3 + ["linear-d10-s0"] * 3
    assert {r.info.status for r in training_runs(store)} == {"FINISHED"}


def test_parallel_steps_log_every_epoch_exactly_once(store, mnist_dir):
    epochs = 3
    args = cli_flags(small_args(mnist_dir, epochs=epochs, latent_dims="3,10,20"))
    result = store.cli("sweep", *args, "--parallel", "4", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = training_runs(store)
    assert sorted(r.info.run_name for r in runs) == [
        "conv-d10-s0",
        "conv-d20-s0",
        "conv-d3-s0",
        "linear-d10-s0",
    ]
    starts, ends = [r.info.start_time for r in runs], [r.info.end_time for r in runs]
    assert max(starts) < min(ends)  # all four were training at once
    sweep = newest_sweep(store)  # each step's run as `mlflow run -e train` would record it
    source = {k: v for k, v in sweep.data.tags.items() if k.startswith("mlflow.source.")}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert source.items() <= run.data.tags.items()
        assert run.data.tags[names.TAG_PARENT_RUN] == sweep.info.run_id
        kind = run.data.params["model_kind"]
        assert run.data.tags[names.TAG_ENTRY_POINT] == names.TRAIN_ENTRY_POINTS[kind]
        for key in names.EPOCH_METRICS:
            history = store.client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), key


def test_stopping_a_parallel_sweep_ends_every_running_step_killed(store, mnist_dir):
    """Its steps are processes of their own: the sweep's SIGTERM reaches each (its process
    group), each ends its run KILLED, and none is left running."""
    args = cli_flags(small_args(mnist_dir, epochs=100, latent_dims="3,10"))
    proc = store.popen(cli_command("sweep", *args, "--parallel", "2"))
    try:
        for name in ("conv-d3-s0", "conv-d10-s0"):
            wait_for_run(store, name)
        deadline = time.time() + 300  # both step processes in training, signals handled
        while time.time() < deadline and not all(
            store.client.get_metric_history(r.info.run_id, names.TEST_MSE)
            for r in training_runs(store)
        ):
            time.sleep(0.5)
        steps = psutil.Process(proc.pid).children()
        assert len(steps) == 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert {r.info.run_name: r.info.status for r in training_runs(store)} == {
        "conv-d3-s0": "KILLED",
        "conv-d10-s0": "KILLED",
    }
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in steps)


def test_a_failing_step_ends_its_run_failed_and_the_sweep_goes_on(store, mnist_dir):
    # At lr=10 (the most allowed) the conv model's output goes constant within its health
    # window, and with no restart allowed its step fails; the linear baseline still trains.
    args = sweep_args(mnist_dir, latent_dims="3", lr=10, max_restarts=0)
    result = store.cli("sweep", *args)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    collapse = "CollapseError: no initialisation learned: seed 0 and its 0 restart seeds"
    assert line.startswith(f"error: 1 of 2 training steps failed: conv-d3-s0 ({collapse}")
    runs = {r.info.run_name: r for r in training_runs(store)}
    assert runs["conv-d3-s0"].info.status == "FAILED"
    assert runs["conv-d3-s0"].data.tags[names.TAG_FAILURE].startswith(collapse)
    assert runs["linear-d10-s0"].info.status == "FINISHED"
    sweep = newest_sweep(store)
    assert sweep.info.status == "FAILED"
    assert compared_names(store, sweep.info.run_id) == ["linear-d10-s0"]
