"""`main`'s steps on a real two-node Ray cluster (tests/cluster.py), logging to a real
`mlflow server`: where each step ran, a worker killed mid-step, a step that fails for a
reason of its own, a stopped driver, and the refusals before any run."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from tests.cluster import RayCluster, unreachable_address
from tests.tracking.conftest import REPO_ROOT, cli_command, cli_flags, small_args
from tracking import names

pytestmark = pytest.mark.slow


@dataclass
class Driver:
    """Sweeps started inside the cluster's namespace, into an experiment of their own on
    the cluster's tracking server."""

    cluster: RayCluster
    root: Path
    experiment: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.cluster.server_url,
            "MLFLOW_EXPERIMENT_NAME": self.experiment,
            "PYTHONPATH": str(REPO_ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }

    def sweep_args(self, mnist_dir: Path, **overrides) -> list[str]:
        params = {"backend": "ray", "ray_address": self.cluster.address, **overrides}
        return ["sweep", *cli_flags(small_args(mnist_dir, **{"epochs": 1, **params}))]

    def sweep(self, mnist_dir: Path, timeout: float = 600, **overrides):
        cmd = cli_command(*self.sweep_args(mnist_dir, **overrides))
        return self.cluster.run(cmd, env=self.env, cwd=self.root, timeout=timeout)

    def popen(self, mnist_dir: Path, **overrides):
        cmd = cli_command(*self.sweep_args(mnist_dir, **overrides))
        return self.cluster.popen(cmd, self.root / "driver.log", env=self.env, cwd=self.root)

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.cluster.server_url)

    def runs(self, role: str | None = None) -> list:
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        where = f"tags.{names.TAG_ROLE} = '{role}'" if role else ""
        return self.client.search_runs([experiment.experiment_id], where)


@pytest.fixture
def driver(ray_cluster: RayCluster, tmp_path: Path, request) -> Driver:
    return Driver(ray_cluster, tmp_path, f"ray-{request.node.name}"[:200])


def output(result) -> str:
    return result.stdout[-4000:] + result.stderr[-4000:]


def epochs_logged(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, names.TEST_MSE))


def test_sweep_trains_every_step_on_both_nodes_then_reuses_them(driver, mnist_dir):
    result = driver.sweep(mnist_dir, latent_dims="3,10", seeds="0,1")
    assert result.returncode == 0, output(result)
    (sweep,) = driver.runs(names.ROLE_SWEEP)
    trained = driver.runs(names.ROLE_TRAIN)
    expected = [f"{c}-s{s}" for c in ("conv-d10", "conv-d3", "linear-d10") for s in (0, 1)]
    assert sorted(r.info.run_name for r in trained) == expected
    for run in trained:
        assert run.info.status == "FINISHED"
        assert run.data.tags[names.TAG_PARENT_RUN] == sweep.info.run_id
        assert run.data.tags[names.TAG_CODE_VERSION] == sweep.data.tags[names.TAG_CODE_VERSION]
        assert run.data.tags[names.TAG_ENTRY_POINT] in ("train", "train_linear")
        assert epochs_logged(driver.client, run.info.run_id) == [1]
        assert f"{run.info.run_name} FINISHED on Ray node" in result.stdout
    assert {r.data.tags[names.TAG_RAY_NODE] for r in trained} == set(driver.cluster.node_ids())
    (comparison,) = driver.runs(names.ROLE_COMPARISON)
    assert comparison.info.status == "FINISHED"
    report = driver.client.download_artifacts(
        comparison.info.run_id, "report.csv", str(driver.root)
    )
    header = Path(report).read_text().splitlines()[0]
    assert "final_test_mse_std" in header and "final_test_mse_min" in header

    again = driver.sweep(mnist_dir, latent_dims="3,10", seeds="0,1")
    assert again.returncode == 0, output(again)
    assert again.stdout.count("reusing FINISHED run") == 6
    assert len(driver.runs(names.ROLE_TRAIN)) == 6  # nothing trained again


def test_a_killed_worker_is_retried_and_continues_its_run(driver, mnist_dir):
    proc = driver.popen(mnist_dir, latent_dims="3", epochs=4, train_limit=2048)
    try:
        run = wait_for_epoch(driver, "conv-d3-s0", proc)
        worker = task_process("train conv-d3-s0")
        worker.kill()  # SIGKILL: as the kernel's out-of-memory killer does
        proc.wait(timeout=600)
    finally:
        proc.kill()
    log = (driver.root / "driver.log").read_text()
    assert proc.returncode == 0, log[-5000:]
    run = driver.client.get_run(run.info.run_id)
    epochs = epochs_logged(driver.client, run.info.run_id)
    print(f"killed worker: {run.info.status}, epochs {epochs}, {run.data.tags.get('resumed')!r}")
    assert run.info.status == "FINISHED"
    assert epochs == [1, 2, 3, 4]  # each exactly once
    assert run.data.tags[names.TAG_RESUMED].startswith("after epoch ")
    assert "conv-d3-s0 FINISHED on Ray node" in log and "resumed from its checkpoint" in log


def wait_for_epoch(driver: Driver, name: str, proc, timeout: float = 300):
    """The step's run, once it has recorded its first epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for run in driver.runs(names.ROLE_TRAIN):
            if run.info.run_name == name and epochs_logged(driver.client, run.info.run_id):
                return run
        time.sleep(0.2)
    log = (driver.root / "driver.log").read_text()[-4000:]
    raise AssertionError(f"{name} recorded no epoch within {timeout} s:\n{log}")


def task_process(task_name: str) -> psutil.Process:
    """The Ray worker running the named task (its process title is ray::NAME)."""
    for process in psutil.process_iter(["cmdline"]):
        if " ".join(process.info["cmdline"] or []).startswith(f"ray::{task_name}"):
            return process
    raise AssertionError(f"no worker process runs {task_name}")


def test_a_step_that_fails_for_its_own_reason_is_not_retried(driver, mnist_dir):
    # At lr=10 the conv model goes constant within its health window, and with no restart
    # allowed its step fails; the linear baseline still trains.
    result = driver.sweep(mnist_dir, latent_dims="3", lr=10, max_restarts=0)
    assert result.returncode == 1, output(result)
    runs = {r.info.run_name: r for r in driver.runs(names.ROLE_TRAIN)}
    collapse = "CollapseError: no initialisation learned"
    assert runs["conv-d3-s0"].info.status == "FAILED"
    assert runs["conv-d3-s0"].data.tags[names.TAG_FAILURE].startswith(collapse)
    assert runs["linear-d10-s0"].info.status == "FINISHED"
    # One attempt: a second, in the same run, would have logged its own failed start.
    assert len(runs["conv-d3-s0"].data.tags[names.TAG_RESTART_LOG].splitlines()) == 1
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: 1 of 2 training steps failed: conv-d3-s0 ({collapse}")
    (comparison,) = driver.runs(names.ROLE_COMPARISON)
    assert comparison.info.status == "FINISHED"


def test_stopping_the_driver_cancels_the_tasks_and_ends_their_runs_killed(driver, mnist_dir):
    proc = driver.popen(mnist_dir, latent_dims="3,10", epochs=20, train_limit=2048)
    try:
        wait_for_epoch(driver, "conv-d3-s0", proc)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=180)
    finally:
        proc.kill()
    log = (driver.root / "driver.log").read_text()
    assert proc.returncode == 130, log[-4000:]
    statuses = {r.info.run_name: r.info.status for r in driver.runs()}
    assert statuses and set(statuses.values()) == {"KILLED"}, statuses
    assert not [p for p in psutil.process_iter(["cmdline"]) if "train conv-d" in " ".join(
        p.info["cmdline"] or [])]  # fmt: skip


@pytest.mark.parametrize(
    "where", ["local store", "unreachable cluster", "a GPU no node has", "more CPUs than a node"]
)
def test_refused_in_under_30_s_with_one_line_and_no_run(driver, mnist_dir, tmp_path, where):
    """Each node of the test cluster has one CPU and no GPU: a step asking for a GPU, or
    for two CPUs, would wait for ever; it is refused before any run instead."""
    env = driver.env
    if where == "local store":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
        args, message = driver.sweep_args(mnist_dir), "backend=ray on the cluster at"
    elif where == "unreachable cluster":
        address = unreachable_address()
        args = driver.sweep_args(mnist_dir, ray_address=address)
        message = f"no Ray cluster answers at {address}"
    elif where == "a GPU no node has":
        args = driver.sweep_args(mnist_dir, step_gpus=0.25)
        message = "step_gpus=0.25 is more than any node of the Ray cluster has (at most 0 GPUs"
    else:
        args = driver.sweep_args(mnist_dir, step_cpus=2)
        message = "step_cpus=2 is more than any node of the Ray cluster has (at most 1 CPUs"
    start = time.monotonic()
    result = driver.cluster.run(cli_command(*args), env=env, cwd=tmp_path, timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode == 2, output(result)
    lines = result.stderr.strip().splitlines()
    if where in ("local store", "unreachable cluster"):  # refused before joining any cluster
        assert len(lines) == 1, lines
    # Joined, Ray has logged its own lines first; the refusal is one line, the last.
    assert [ln for ln in lines if ln.startswith("error:")] == lines[-1:], lines
    assert lines[-1].startswith(f"error: {message}"), lines
    assert driver.runs() == []
    assert not (tmp_path / "mlflow.db").exists()
