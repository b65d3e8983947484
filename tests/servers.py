"""Real servers for tests: a throwaway PostgreSQL cluster and `mlflow server` processes,
on 127.0.0.1 (or a test host's address), in temporary folders."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.system import apt_install, free_port

BIN = Path(sys.executable).parent
POSTGRES_USER = "postgres"  # Debian's system user: the server refuses to run as root


def postgres_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder, installing Debian's package
    where there is none."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        apt_install("postgresql")
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent


def _as_postgres(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", POSTGRES_USER, "--", *cmd],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Postgres:
    """A PostgreSQL cluster in a temporary folder owned by `postgres`, listening on
    127.0.0.1 only, trusting local connections; removed by stop()."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        # Not under pytest's tmp_path: its parents are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        shutil.chown(self.root, POSTGRES_USER, POSTGRES_USER)
        self.data, self.port = self.root / "data", free_port()
        _as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "mlflow")
        options = f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1"
        _as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w", "start",
            "-l", str(self.root / "server.log"),
        )  # fmt: skip
        _as_postgres(
            str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow",
            "mlflow",
        )  # fmt: skip
        self.uri = f"postgresql://mlflow@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        try:
            _as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """`mlflow server` on host (127.0.0.1 by default) over a backend store, proxying artifacts
    into a folder. stop() and start() again keep the port, as a restarted team server would.
    Its default --allowed-hosts admits localhost and private addresses (10.*, 192.168.*)."""

    def __init__(self, backend_uri: str, root: Path, host: str = "127.0.0.1") -> None:
        self.backend_uri, self.root, self.host = backend_uri, root, host
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = root / "server.log"

    def start(self, timeout: float = 120) -> MlflowServer:
        cmd = [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", self.host, "--port", str(self.port),
            "--workers", "2",
        ]  # fmt: skip
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not up in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
