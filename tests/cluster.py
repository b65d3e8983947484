"""A real two-node Ray cluster for tests, in a network namespace of its own.

Tests send traffic only to loopback or to test hosts that they create. Ray rewrites
`--node-ip-address 127.0.0.1` to the machine's outward address, but in a network namespace
without a default route it settles on 127.0.0.1. So both nodes run in such a namespace,
joined to this machine by a veth pair; the tracking server listens on this machine's end of
it, where the tests and the nodes both reach it. Everything Ray runs (nodes, drivers) runs
in the namespace: its 127.0.0.1 is not this machine's."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.servers import MlflowServer
from tests.system import apt_install, free_port

BIN = Path(sys.executable).parent
NAMESPACE_PREFIX = "latent-ray-"
SUBNET_PREFIX = "10.231"

# Prints the alive nodes as [[node id, node address], ...] once `want` are alive or the
# deadline passes: python -c NODES ADDRESS WANT SECONDS.
NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="error")
want, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
while len(nodes := [n for n in ray.nodes() if n["Alive"]]) < want and time.time() < deadline:
    time.sleep(0.5)
print(json.dumps([[n["NodeID"], n["NodeManagerAddress"]] for n in nodes]))
"""


class NamespaceUnavailable(RuntimeError):
    """This machine cannot give the tests a network namespace."""


def unreachable_address() -> str:
    """A Ray address on 127.0.0.1 that nothing listens on."""
    return f"127.0.0.1:{free_port()}"


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


class Namespace:
    """A network namespace with loopback up and a veth pair to this machine: this side
    10.231.N.1/24, the namespace's side 10.231.N.2/24, no default route."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise NamespaceUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            apt_install("iproute2")
        pid = os.getpid()
        self.name, self.veth = f"{NAMESPACE_PREFIX}{pid}", f"lr{pid}h"
        self.subnet = _free_subnet(pid)
        self.host_ip = f"{self.subnet}.1"
        # `ip netns exec` mounts this over /etc/hosts: the hostname, which Ray resolves
        # when it finds no route out, stays on loopback whatever the machine's /etc/hosts.
        self.etc = Path("/etc/netns") / self.name
        _ip("netns", "add", self.name)
        try:
            self._wire(pid)
        except BaseException:
            self.remove()
            raise

    def _wire(self, pid: int) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "hosts").write_text(f"127.0.0.1 localhost {os.uname().nodename}\n")
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip(
            "link",
            "add",
            self.veth,
            "type",
            "veth",
            "peer",
            "name",
            f"lr{pid}n",
            "netns",
            self.name,
        )
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", self.name, "addr", "add", f"{self.subnet}.2/24", "dev", f"lr{pid}n")
        _ip("-n", self.name, "link", "set", f"lr{pid}n", "up")

    def exec(self, cmd: list[str]) -> list[str]:
        """cmd, to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def processes(self) -> list[psutil.Process]:
        """The processes living in the namespace now."""
        inode = os.stat(f"/run/netns/{self.name}").st_ino
        found = []
        for process in psutil.process_iter():
            try:
                if os.stat(f"/proc/{process.pid}/ns/net").st_ino == inode:
                    found.append(process)
            except OSError:
                pass  # gone, or not ours to look at
        return found

    def remove(self) -> None:
        """Delete the veth pair, the namespace and its /etc folder."""
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        shutil.rmtree(self.etc, ignore_errors=True)
        if self.etc.parent.exists() and not any(self.etc.parent.iterdir()):
            self.etc.parent.rmdir()


def _free_subnet(pid: int) -> str:
    """A 10.231.N prefix that no address or route of this machine uses, N picked from pid."""
    used = _ip("-4", "addr") + _ip("-4", "route", "show", "table", "all")
    for k in range(254):
        subnet = f"{SUBNET_PREFIX}.{(pid + k) % 254 + 1}"
        if f"{subnet}." not in used:
            return subnet
    raise NamespaceUnavailable(f"every {SUBNET_PREFIX}.N/24 subnet is in use")


class RayCluster:
    """A head and a worker node (one CPU each) in a namespace, and an `mlflow server` over
    SQLite on this machine's end of the veth pair. All in one temporary folder."""

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        self.root = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"  # as seen inside the namespace
        backend = f"sqlite:///{self.root / 'mlflow.db'}"
        self.server = MlflowServer(backend, self.root, host=namespace.host_ip)
        self.server_url = self.server.url
        self.env = _ray_env()
        self.nodes: list[subprocess.Popen] = []

    def start(self, timeout: float = 60) -> RayCluster:
        """Start the nodes and the server; wait until both nodes are alive."""
        try:
            common = ["--num-cpus", "1", "--object-store-memory", "100000000", "--block"]
            head = ["--head", "--port", str(self.port), "--temp-dir", str(self.root)]
            head += ["--include-dashboard=false", "--disable-usage-stats"]
            self._start_node("head", [*head, *common])
            self._start_node("worker", ["--address", self.address, *common])
            self.server.start()
            self._wait_for_nodes(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, name: str, args: list[str]) -> None:
        self.nodes.append(self.popen([str(BIN / "ray"), "start", *args], self.root / f"{name}.log"))

    def _wait_for_nodes(self, timeout: float) -> None:
        deadline, probe = time.time() + timeout, None
        while (left := deadline - time.time()) > 0:
            if any(node.poll() is not None for node in self.nodes):
                break
            probe = self.run(_nodes_cmd(self.address, 2, min(left, 10)), timeout=left + 30)
            nodes = _parse_nodes(probe)
            if len(nodes) == 2:
                if {address for _, address in nodes} != {"127.0.0.1"}:
                    raise RuntimeError(f"Ray nodes are not on 127.0.0.1: {nodes}")
                return
        raise RuntimeError(f"Ray cluster not up in {timeout} s\n{self._logs(probe)}")

    def _logs(self, probe: subprocess.CompletedProcess | None) -> str:
        logs = [self.root / "head.log", self.root / "worker.log"]
        tails = [f"--- {log.name}:\n{log.read_text()[-2000:]}" for log in logs if log.exists()]
        if probe is not None:
            tails.append(f"--- last probe:\n{probe.stdout[-500:]}{probe.stderr[-1500:]}")
        return "\n".join(tails)

    def node_ids(self) -> list[str]:
        """The ids of the nodes alive now."""
        probe = self.run(_nodes_cmd(self.address, 0, 0), timeout=60)
        if probe.returncode != 0:
            raise RuntimeError(f"cannot list Ray nodes:\n{probe.stderr[-2000:]}")
        return [node_id for node_id, _ in _parse_nodes(probe)]

    def run(
        self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:  # fmt: skip
        """Run cmd in the namespace, with env laid over self.env, in cwd (the cluster's
        folder by default); output captured as text."""
        return subprocess.run(
            self.namespace.exec(cmd), env={**self.env, **(env or {})}, cwd=cwd or self.root,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def popen(
        self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:  # fmt: skip
        """Start cmd in the namespace as run() would, in its own process group with Ctrl-C
        handled as in a terminal, its output going to log."""
        with open(log, "w") as out:
            return subprocess.Popen(
                self.namespace.exec(cmd), env={**self.env, **(env or {})}, cwd=cwd or self.root,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip

    def stop(self) -> None:
        """Stop the nodes, kill whatever still lives in the namespace, stop the server,
        remove the namespace and the folder."""
        for node in reversed(self.nodes):
            _stop_group(node)
        leftovers = self.namespace.processes()
        for process in leftovers:
            process.kill()
        psutil.wait_procs(leftovers, timeout=10)
        self.server.stop()
        self.namespace.remove()
        shutil.rmtree(self.root, ignore_errors=True)


def _nodes_cmd(address: str, want: int, seconds: float) -> list[str]:
    return [str(BIN / "python"), "-c", NODES, address, str(want), str(seconds)]


def _parse_nodes(probe: subprocess.CompletedProcess) -> list[list[str]]:
    lines = probe.stdout.strip().splitlines()
    return json.loads(lines[-1]) if probe.returncode == 0 and lines else []


def _ray_env() -> dict[str, str]:
    """This process's environment for Ray: no usage statistics, the cluster's own token
    (not ~/.ray/auth_token, shared by every cluster of the machine), no draining on
    SIGTERM (30 s by default), no inherited address or MLflow run."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    }
    for name in ("RAY_ADDRESS", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    return env


def _stop_group(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM process's group, SIGKILL it after timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def start_cluster(timeout: float = 60) -> RayCluster:
    """A started RayCluster; NamespaceUnavailable where this machine cannot make one."""
    namespace = Namespace()
    try:
        cluster = RayCluster(namespace)
    except BaseException:
        namespace.remove()
        raise
    return cluster.start(timeout)
