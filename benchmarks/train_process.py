"""Train-process benchmark: a whole `train` process against the epochs it trains.

Runs `python -m tracking.cli train --latent-dim 100 --epochs 2` (full data, MLflow's
embedded default store in a fresh temporary folder) `--runs` times one after another, the
first of which also creates the store, and prints for each the process's wall time (start
to exit), the sum of its epochs' `epoch_seconds` (training and each epoch's evaluation,
the health window included), what lies beyond them, and whether that is within the
target of 15 s.

    .venv/bin/python -m benchmarks.train_process                    # 2 runs, d=100, 2 epochs
    .venv/bin/python -m benchmarks.train_process --precision bf16
    .venv/bin/python -m benchmarks.train_process --epochs 1 --train-limit 2048   # smoke size
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from pipeline.config import PRECISIONS
from tracking import names
from tracking.host import cpu_model, instruction_set

PROJECT = Path(__file__).resolve().parents[1]
TARGET_BEYOND_SECONDS = 15.0


def epoch_seconds(store: str, seen: set[str]) -> float:
    """The newest training run not seen before: its name and the sum of its epochs' times."""
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(
        experiments,
        f"tags.{names.TAG_ROLE} = '{names.ROLE_TRAIN}'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if run.info.run_id in seen:
        raise RuntimeError("the train process recorded no new run")
    seen.add(run.info.run_id)
    history = client.get_metric_history(run.info.run_id, names.EPOCH_SECONDS)
    return sum(m.value for m in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--latent-dim", type=int, default=100)
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0])
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--data-dir", default=str(PROJECT / "data"))
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(PROJECT)
    cmd = [
        sys.executable, "-m", "tracking.cli", "train", "--model-kind", "conv",
        "--latent-dim", str(args.latent_dim), "--epochs", str(args.epochs),
        "--precision", args.precision, "--data-dir", args.data_dir,
        "--train-limit", str(args.train_limit),
    ]  # fmt: skip
    host = f"{cpu_model()}, {instruction_set()}"
    print(f"host: {host}; {' '.join(cmd[1:])}", flush=True)
    seen: set[str] = set()
    rows = []
    with tempfile.TemporaryDirectory(prefix="train-process-bench-") as tmp:
        for i in range(args.runs):
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"error: the train process exited {done.returncode}:\n{done.stderr}")
            epochs = epoch_seconds(f"sqlite:///{tmp}/mlflow.db", seen)
            store = "creates the store" if i == 0 else "existing store"
            rows.append((store, wall, epochs))
            print(f"  run {i + 1} ({store}): wall {wall:.1f} s, epochs {epochs:.1f} s, "
                  f"beyond {wall - epochs:.1f} s", flush=True)  # fmt: skip
    worst = max(wall - epochs for _, wall, epochs in rows)
    verdict = "met" if worst <= TARGET_BEYOND_SECONDS else "NOT met"
    print(f"\nhost: {host}; most beyond the epochs: {worst:.1f} s "
          f"(target <= {TARGET_BEYOND_SECONDS:.0f} s: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
