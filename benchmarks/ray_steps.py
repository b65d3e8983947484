"""Ray benchmark: the same small sweep in the sweep's own process and on a local Ray
cluster, in one run, against one `mlflow server`; prints each step's time beyond its
epochs for both, and what Ray adds a step.

It starts the server and a one-node cluster (`ray start --head`, not counted) on
127.0.0.1, with as many CPUs as one step asks for, so that the cluster trains one step at
a time with the same threads as the process: the two sweeps differ only in where the
steps run. A step's time is from the end of the step before it (the first: from its run's
creation) to the end of its run; its epochs are the sum of its epoch_seconds.

    .venv/bin/python -m benchmarks.ray_steps
    .venv/bin/python -m benchmarks.ray_steps -P latent_dims=3,10,100 -P epochs=3

Where Ray gives its nodes a non-loopback address (it replaces 127.0.0.1 by the
machine's), run it in a network namespace of its own: `ip netns exec NS .venv/bin/python
-m benchmarks.ray_steps`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from tests.servers import MlflowServer
from tests.system import free_port
from tracking import names
from tracking.host import cpu_model, instruction_set

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = {"latent_dims": "3,100", "seeds": "0", "epochs": "2", "train_limit": "4096",
         "test_limit": "1024"}  # fmt: skip


def start_cluster(root: Path, cpus: int, env: dict) -> tuple[subprocess.Popen, str]:
    """A one-node Ray cluster in the foreground (`--block`), its own process group."""
    port = free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", str(cpus),
           "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", str(root / "ray"),
           "--object-store-memory", "100000000", "--block"]  # fmt: skip
    log = open(root / "ray.log", "w")  # noqa: SIM115 (the cluster writes to it)
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    address = f"127.0.0.1:{port}"
    probe = f"import ray; ray.init(address='{address}'); print(len(ray.nodes()))"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ok = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True)
        if ok.returncode == 0:
            return head, address
        time.sleep(1)
    raise RuntimeError(f"Ray did not start:\n{(root / 'ray.log').read_text()[-2000:]}")


def stop_cluster(head: subprocess.Popen) -> None:
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def sweep(params: dict[str, str], env: dict, cwd: Path, experiment: str) -> float:
    """One sweep in its own experiment; returns its wall seconds."""
    flags = [a for k, v in params.items() for a in (f"--{k.replace('_', '-')}", v)]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tracking.cli", "sweep", *flags],
        cwd=cwd, env={**env, "MLFLOW_EXPERIMENT_NAME": experiment}, check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def beyond_epochs(client: MlflowClient, experiment: str) -> list[tuple[str, float, float]]:
    """(run name, step seconds, epoch seconds) of each training run, in the order they
    ended."""
    exp = client.get_experiment_by_name(experiment).experiment_id
    found = client.search_runs([exp], f"tags.{names.TAG_ROLE} = '{names.ROLE_TRAIN}'")
    found = sorted(found, key=lambda r: r.info.end_time)
    rows, previous = [], min(r.info.start_time for r in found)
    for run in found:
        epochs = client.get_metric_history(run.info.run_id, names.EPOCH_SECONDS)
        rows.append((run.info.run_name, (run.info.end_time - previous) / 1000,
                     sum(m.value for m in epochs)))  # fmt: skip
        previous = run.info.end_time
    return rows


def report(label: str, rows: list[tuple[str, float, float]]) -> float:
    print(f"\n{label}:")
    for name, step, epochs in rows:
        print(
            f"  {name:14s} step {step:6.1f} s, epochs {epochs:6.1f} s, "
            f"beyond {step - epochs:5.1f} s"
        )
    mean = sum(step - epochs for _, step, epochs in rows) / len(rows)
    print(f"  mean beyond its epochs: {mean:.2f} s a step")
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-P", dest="params", action="append", default=[], help="k=v, as mlflow run")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs a step")
    args = parser.parse_args()
    params = {**SMALL, "data_dir": str(PROJECT / "data")}
    params.update(p.split("=", 1) for p in args.params)
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
        # A token of its own: Ray turns token authentication on where ~/.ray/auth_token
        # exists, and every process of the cluster and its drivers must then hold it.
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN=secrets.token_hex(32), PYTHONPATH=str(PROJECT),
                   PATH=f"{BIN}{os.pathsep}{env['PATH']}")  # fmt: skip
        server = MlflowServer(f"sqlite:///{root / 'mlflow.db'}", root).start()
        env["MLFLOW_TRACKING_URI"] = server.url
        head, address = start_cluster(root, args.cpus, env)
        try:
            walls = {"in process": sweep(params, env, root, "bench-in-process")}
            ray_params = {**params, "backend": "ray", "ray_address": address,
                          "step_cpus": str(args.cpus)}  # fmt: skip
            walls["on Ray"] = sweep(ray_params, env, root, "bench-ray")
            client = MlflowClient(server.url)
            here = report("in process", beyond_epochs(client, "bench-in-process"))
            there = report("on Ray", beyond_epochs(client, "bench-ray"))
        finally:
            stop_cluster(head)
            server.stop()
    print(f"\nhost: {cpu_model()}, {instruction_set()}, {os.cpu_count()} cores")
    print(
        f"sweep wall time: in process {walls['in process']:.1f} s, on Ray {walls['on Ray']:.1f} s"
    )
    print(
        f"Ray adds {there - here:+.2f} s a step beyond the in-process sweep (target: at most 3 s)"
    )


if __name__ == "__main__":
    main()
