"""A sweep's training steps as tasks on a Ray cluster (backend=ray).

The driver (the sweep's process) makes each step's child run, then submits one task per
step, asking for `step_cpus` CPUs and `step_gpus` GPUs; the task trains that run with the
same function as every backend (tracking.steps.train_step), on whichever node Ray
picks, and logs to the driver's tracking server. The workers run the driver's code: the
project directory travels with the job (Ray's runtime environment `working_dir`), and the
runs record the driver's code version.

Faults: a task whose worker dies (killed, out of memory, node lost) is retried by Ray, and
the retry continues the same run from its last checkpoint. A step that fails for a reason
of its own (diverged, collapsed, bad data) raises, is not retried, and ends FAILED. A stop
signal to the driver cancels the tasks (Ray sends each worker SIGINT; the run ends KILLED
at its next step) and ends any run left RUNNING as KILLED.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace

import mlflow
from mlflow import MlflowClient

from pipeline.config import ClusterConfig, ConfigError, one_line
from tracking import launch, names, runs
from tracking.steps import Ended, Job, train_step

CONNECT_SECONDS = 10  # for a cluster's address to accept a connection, before any run
POLL_SECONDS = 0.5  # how often the driver looks for ended tasks and a stop signal
CANCEL_WAIT_SECONDS = 60  # for cancelled tasks to end their runs (they stop within a step)
TASK_RETRIES = 3  # of a task whose worker or node died; each continues from the checkpoint
# Not shipped to the workers: data, stores, environments and caches of this machine.
EXCLUDES = [
    ".git", ".venv", "data", "mlruns", "mlartifacts", "mlflow.db", "outputs", ".gl", ".whl",
    "**/__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "build",
]  # fmt: skip
# What the workers need of the driver's environment to reach its tracking server.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL",
)
SERVER_SCHEMES = ("http://", "https://", "databricks")


def check_store(cluster: ClusterConfig, tracking_uri: str) -> None:
    """ConfigError unless every node can reach the tracking store. A new cluster on this
    machine can use a local store (SQLite, files); an existing cluster cannot be shown to
    keep to this machine (nodes can join it at any time), so it needs a tracking server."""
    if cluster.address is None or tracking_uri.startswith(SERVER_SCHEMES):
        return
    raise ConfigError(
        f"backend=ray on the cluster at {cluster.address} needs a tracking server that "
        f"every node reaches, not the store {tracking_uri} on this machine: start `mlflow "
        "server` and set MLFLOW_TRACKING_URI=http://HOST:PORT (docs/cluster.md)"
    )


def check_reachable(address: str, seconds: float = CONNECT_SECONDS) -> None:
    """ConfigError unless the cluster's address accepts a connection within `seconds`
    (Ray itself retries an unreachable cluster for minutes)."""
    if address == "auto":  # Ray finds the cluster of this machine, or fails at once
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"ray_address must be host:port, ray://host:port or auto (got {address!r})"
        )
    deadline, reason = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return
        except OSError as exc:
            reason = one_line(exc)
            time.sleep(1)
    raise ConfigError(
        f"no Ray cluster answers at {address} ({reason}) within {seconds:.0f} s: start one "
        "(`ray start --head`) or point ray_address or RAY_ADDRESS at a running one"
    )


def worker_tracking_uri(uri: str) -> str:
    """The tracking URI as the workers must see it: a relative SQLite path made absolute
    (a worker's working directory is its copy of the project)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + os.path.abspath(uri[len(prefix) :])
    return uri


def runtime_env() -> dict:
    """The job's runtime environment: the project's code, and the tracking settings."""
    env = {"MLFLOW_TRACKING_URI": worker_tracking_uri(mlflow.get_tracking_uri())}
    env.update({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})
    return {"working_dir": str(runs.PROJECT_ROOT), "excludes": EXCLUDES, "env_vars": env}


def connect(cluster: ClusterConfig) -> None:
    """Check the store and the address, then join the cluster (or start one on this
    machine); ConfigError, before any run, if that cannot be done."""
    check_store(cluster, mlflow.get_tracking_uri())
    if cluster.address:
        check_reachable(cluster.address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # clusters we start send nothing
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "backend=ray needs Ray: install the project with its ray extra "
            "(pip install -e '.[ray]'; `make` does)"
        ) from None
    local = {} if cluster.address else {"include_dashboard": False}
    try:
        ray.init(address=cluster.address, runtime_env=runtime_env(), **local)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot join the Ray cluster: {one_line(exc)}") from None
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    check_fits(cluster, nodes)
    resources = ray.cluster_resources()
    print(
        f"Ray: {len(nodes)} node(s), {resources.get('CPU', 0):g} CPUs, "
        f"{resources.get('GPU', 0):g} GPUs; each step asks for {cluster.step_cpus:g} CPUs and "
        f"{cluster.step_gpus:g} GPUs",
        flush=True,
    )


def check_fits(cluster: ClusterConfig, nodes: list[dict[str, float]]) -> None:
    """ConfigError unless one of the nodes (their resources) has both the CPUs and the GPUs
    a step asks for: Ray would keep such a task waiting for a node that never comes."""
    asked = {"CPU": cluster.step_cpus, "GPU": cluster.step_gpus}
    if any(all(node.get(r, 0) >= n for r, n in asked.items()) for node in nodes):
        return
    for resource, n in asked.items():
        most = max((node.get(resource, 0) for node in nodes), default=0)
        if n > most:
            raise ConfigError(
                f"step_{resource.lower()}s={n:g} is more than any node of the Ray cluster has "
                f"(at most {most:g} {resource}s a node): lower it, or add such a node"
            )
    raise ConfigError(
        f"no node of the Ray cluster has both step_cpus={asked['CPU']:g} CPUs and "
        f"step_gpus={asked['GPU']:g} GPUs: lower one of them, or add such a node"
    )


def _train_on_worker(job: Job, run_id: str) -> dict[str, object]:
    """The task: train the step's run on this worker (from the run's checkpoint when an
    earlier attempt recorded one). A stop signal ends the run KILLED at the next step."""
    import ray

    from pipeline.training.hardware import prepare_process, require_precision
    from pipeline.training.tensors import flush_denormals
    from tracking.requests import continue_in_run

    # A cluster started by a driver under `mlflow run` passes the driver's run on to its
    # workers; this task's run is the one the driver made for it.
    os.environ.pop("MLFLOW_RUN_ID", None)
    flush_denormals()
    prepare_process()
    require_precision(job.request.train.precision, job.request.train.device)  # this node's
    node = ray.get_runtime_context().get_node_id()
    source_tags = {**job.request.source_tags, names.TAG_RAY_NODE: node}
    with runs.handling_stop_signals():
        request = continue_in_run(replace(job.request, source_tags=source_tags), run_id)
        train_step(request)
    return {"node": node, "resumed": request.checkpoint is not None}


class RaySteps:
    """Every step submitted at once; Ray runs as many as the cluster's resources allow."""

    def __init__(self, cluster: ClusterConfig, parent_run_id: str, experiment_id: str) -> None:
        import ray

        self.parent_run_id, self.experiment_id = parent_run_id, experiment_id
        self.task = ray.remote(_train_on_worker)
        self.options = {
            "num_cpus": cluster.step_cpus,
            "num_gpus": cluster.step_gpus,
            "max_retries": TASK_RETRIES,  # the worker or its node died
            "retry_exceptions": False,  # the step failed for a reason of its own
        }
        self.running: dict[object, tuple[str, str, float]] = {}  # ref: label, run id, start

    def room(self) -> bool:
        return True

    def busy(self) -> bool:
        return bool(self.running)

    def start(self, job: Job) -> None:
        source = job.request.source_tags
        run_id = runs.create_child_run(self.experiment_id, self.parent_run_id, job.label, source)
        ref = self.task.options(name=f"train {job.label}", **self.options).remote(job, run_id)
        self.running[ref] = (job.label, run_id, time.perf_counter())
        print(f"{job.label}: submitted to Ray as run {run_id}", flush=True)

    def wait(self) -> list[Ended]:
        import ray

        while True:
            if runs.stop_requested():
                self.stop_all()
                runs.stop_if_requested()
            done, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_SECONDS)
            if done:
                return [self._ended(ref) for ref in done]

    def _ended(self, ref) -> Ended:
        import ray

        label, run_id, started = self.running.pop(ref)
        seconds = time.perf_counter() - started
        try:
            end = ray.get(ref)
        except ray.exceptions.RayError as exc:
            reason = f"its Ray task failed: {one_line(getattr(exc, 'cause', None) or exc)}"
            runs.end_if_running(run_id, "FAILED", reason)  # its worker died every time
            tags = MlflowClient().get_run(run_id).data.tags
            reason = tags.get(names.TAG_FAILURE) or reason
            print(f"{label} failed after {seconds:.1f} s: {reason}", flush=True)
            return label, launch.failure_line(label, reason)
        metrics = MlflowClient().get_run(run_id).data.metrics
        resumed = ", resumed from its checkpoint" if end["resumed"] else ""
        print(
            f"{label} FINISHED on Ray node {str(end['node'])[:12]} in {seconds:.1f} s{resumed}: "
            f"test MSE {metrics.get(names.FINAL_TEST_MSE, float('nan')):.5f}",
            flush=True,
        )
        return label, None

    def stop_all(self) -> None:
        """Cancel every task (SIGINT to its worker: its run ends KILLED at the next step),
        wait for them, and end KILLED any run left RUNNING (a task not yet started)."""
        import ray

        refs = list(self.running)
        for ref in refs:
            ray.cancel(ref)
        _, stuck = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_SECONDS)
        for ref in stuck:  # only these: Ray 2.60's driver can abort on a force-cancel of
            ray.cancel(ref, force=True)  # a task that has just ended
        for ref in refs:
            label, run_id, _ = self.running.pop(ref)
            runs.end_if_running(run_id, "KILLED", "stopped with the sweep")
            print(f"{label}: cancelled", flush=True)
