"""Real MLflow stores in tmp_path and real subprocesses: the tracking tests' plumbing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.cluster import NamespaceUnavailable, RayCluster, start_cluster
from tracking import names

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Store:
    """A SQLite tracking store in a temporary folder, and an environment pointing at it."""

    root: Path
    uri: str
    env: dict[str, str]

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def runs(self, filter_string: str = "") -> list:
        exp_ids = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(exp_ids, filter_string) if exp_ids else []

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`python -m tracking.cli ARGS` in the store's folder."""
        return self._run(cli_command(*args), timeout)

    def python(self, code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`python -c CODE ARGS` in a fresh process in the store's folder."""
        return self._run([sys.executable, "-c", code, *args], timeout)

    def mlflow_run(
        self, entry_point: str, timeout: float = 600, **params
    ) -> subprocess.CompletedProcess:
        """`mlflow run REPO -e ENTRY --env-manager local -P k=v ...`, as a user types it."""
        return self._run(mlflow_command(entry_point, params), timeout)

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def popen(self, cmd: list[str]) -> subprocess.Popen:
        """Start cmd in its own process group, with Ctrl-C handled as in a terminal (a
        test runner started in the background would otherwise pass SIGINT on ignored).
        Its output goes to process.log in the store's folder."""
        log = open(self.root / "process.log", "w")  # noqa: SIM115 (the child writes to it)
        return subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def cli_flags(params: dict) -> list[str]:
    """Entry point parameters as the CLI's flags: {"train_limit": 8} -> --train-limit 8."""
    return [a for k, v in params.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracking.cli", *args]


def mlflow_command(entry_point: str, params: dict) -> list[str]:
    """As the README runs it: into the study's experiment."""
    cmd = [str(BIN / "mlflow"), "run", str(REPO_ROOT), "-e", entry_point, "--env-manager", "local"]
    cmd += ["--experiment-name", names.EXPERIMENT_NAME]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return cmd


def make_store(root: Path, uri: str | None = None) -> Store:
    """A SQLite store in root, or, given a tracking server's URI, that server."""
    if uri is None:
        uri = f"sqlite:///{root / 'mlflow.db'}"
        _create_sqlite_store(root, uri)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PYTHONPATH": str(REPO_ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    return Store(root, uri, env)


def _create_sqlite_store(root: Path, uri: str) -> None:
    """Create the store from inside root: MLflow gives a new SQLite store's default
    experiment the artifact folder ./mlruns of the process that creates it, which would
    otherwise be the test runner's (the repository) whenever a test opens the store first."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        MlflowClient(tracking_uri=uri).search_experiments()
    finally:
        os.chdir(cwd)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return make_store(tmp_path)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One two-node Ray cluster and tracking server for the session, in a network namespace.
    Skipped where the machine cannot make one, except in CI (CI set), which must run it."""
    try:
        cluster = start_cluster()
    except NamespaceUnavailable as reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the Ray tests, but: {reason}")
        pytest.skip(str(reason))
    try:
        yield cluster
    finally:
        cluster.stop()


def small_args(mnist_dir: Path, **overrides) -> dict[str, str]:
    """Entry point parameters for a fast run on a slice of real MNIST."""
    params = {"epochs": 2, "train_limit": 1024, "test_limit": 256, "data_dir": mnist_dir}
    params.update(overrides)
    return {k: str(v) for k, v in params.items()}
