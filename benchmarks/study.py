"""Study benchmark: the whole default main job as a user runs it, timed and measured.

Runs `python -m mlflow run <project> -e main --env-manager local --experiment-name
latent-size-study` in a fresh temporary folder, so that it uses MLflow's embedded default
store (./mlflow.db there), samples the memory of the whole process tree, then reads back
from the runs the tracking overhead (tracking_seconds against the epochs' training time),
the study overhead (the wall time against the sum of every epoch's time), and the study's
results: every run's test MSE after its first and last epoch, and per configuration the
mean, spread and min/max ratio over seeds, with each configuration's distance to its PCA
floor from the comparison's report.

    .venv/bin/python -m benchmarks.study                       # the full default study
    .venv/bin/python -m benchmarks.study -P seeds=0,1,2        # three seeds of everything
    .venv/bin/python -m benchmarks.study -P epochs=1 -P train_limit=2048 -P test_limit=512
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from mlflow import MlflowClient

from tracking import names
from tracking.host import describe, instruction_set

PROJECT = Path(__file__).resolve().parents[1]


def tree_memory(proc: psutil.Process) -> int:
    """Proportional set size of the process tree: shared pages (torch's libraries, mapped
    by every process) counted once in all, unlike summed RSS."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def run_measured(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int, int]:
    """Wall seconds, peak memory (PSS) of the process tree, and the exit code."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, tree_memory(root))
            done.wait(2.0)  # reading PSS costs ~30 ms of CPU: sample sparingly

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    return time.perf_counter() - start, peak, code


def main_job(params: list[str]) -> list[str]:
    """`mlflow run` of the main entry point as `make study` runs it, with the project's
    data and the given `name=value` parameters. MLflow as a module of this Python: its
    console script need not lie beside it (on the GPU machine `pip --target` puts it
    elsewhere)."""
    cmd = [sys.executable, "-m", "mlflow", "run", str(PROJECT), "-e", "main",
           "--env-manager", "local", "--experiment-name", names.EXPERIMENT_NAME,
           "-P", f"data_dir={PROJECT / 'data'}"]  # fmt: skip
    for p in params:
        cmd += ["-P", p]
    return cmd


def job_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's arguments: the main job's parameters, each `-P name=value`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "-P", dest="params", action="append", default=[],
        help="an entry point parameter, as for mlflow run",
    )  # fmt: skip
    return parser


def job_env() -> dict[str, str]:
    """This environment without MLflow's variables (the job uses the default store in its
    folder), the virtualenv first on PATH (`mlflow run` starts `python` from PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def study_runs(client: MlflowClient, role: str, **kwargs) -> list:
    """The study experiment's runs of a role."""
    experiment = client.get_experiment_by_name(names.EXPERIMENT_NAME).experiment_id
    return client.search_runs([experiment], f"tags.{names.TAG_ROLE} = '{role}'", **kwargs)


def sweep_figures(store: str) -> tuple[float, str]:
    """The sweep's own seconds (its steps, from the first start to the last end, without
    the comparison) and its host in words, from the sweep run."""
    client = MlflowClient(store)
    (sweep,) = study_runs(client, names.ROLE_SWEEP, max_results=1)
    return sweep.data.metrics.get(names.SWEEP_SECONDS, float("nan")), describe(sweep.data.tags)


def overhead(store: str) -> list[tuple[str, float, float]]:
    """(run name, tracking seconds, training seconds) of every training run."""
    client = MlflowClient(store)
    rows = []
    for run in study_runs(client, names.ROLE_TRAIN):
        epochs = client.get_metric_history(run.info.run_id, names.EPOCH_SECONDS)
        rows.append(
            (
                run.info.run_name,
                run.data.metrics.get(names.TRACKING_SECONDS, float("nan")),
                sum(m.value for m in epochs),
            )
        )
    return sorted(rows)


def results(store: str, into: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per training run (config, seed, epoch-1 and final test MSE, restarts) and the
    comparison's per-configuration report."""
    client = MlflowClient(store)
    rows = []
    for run in study_runs(client, names.ROLE_TRAIN):
        first = client.get_metric_history(run.info.run_id, names.TEST_MSE)
        rows.append(
            {
                "config": names.config_name(
                    run.data.params["model_kind"], run.data.params["latent_dim"]
                ),
                "seed": int(run.data.params["seed"]),
                "epoch1_test_mse": min(first, key=lambda m: m.step).value,
                "final_test_mse": run.data.metrics[names.FINAL_TEST_MSE],
                "restarts": int(run.data.metrics.get(names.RESTARTS, 0)),
            }
        )
    (comparison,) = study_runs(client, names.ROLE_COMPARISON, max_results=1)
    report = pd.read_csv(client.download_artifacts(comparison.info.run_id, "report.csv", into))
    return pd.DataFrame(rows).sort_values(["config", "seed"]), report


def print_results(runs: pd.DataFrame, report: pd.DataFrame) -> None:
    print(f"\nhost: {instruction_set()}")
    print(runs.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    print(f"  highest epoch-1 test MSE of any run: {runs['epoch1_test_mse'].max():.5f}")
    table = report.set_index("model")
    for config, row in table.iterrows():
        spread = row["final_test_mse_max"] / row["final_test_mse_min"]
        print(
            f"  {config:11s} test MSE mean {row['final_test_mse_mean']:.5f} "
            f"(sd {row['final_test_mse_std']:.5f}, min {row['final_test_mse_min']:.5f}, "
            f"max {row['final_test_mse_max']:.5f}, max/min {spread:.3f}) over "
            f"{row['seeds']} seeds; {row['ratio_to_pca']:.4f}x its PCA floor "
            f"{row['pca_floor']:.5f}; restarts {row['restarts']}"
        )


def main() -> None:
    args = job_parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory(prefix="study-bench-") as tmp:
        wall, peak, code = run_measured(main_job(args.params), Path(tmp), job_env())
        store = f"sqlite:///{tmp}/mlflow.db"
        rows = overhead(store)
        runs, report = results(store, tmp) if code == 0 else (None, None)
        sweep_seconds, host = sweep_figures(store) if code == 0 else (float("nan"), "?")
    print(
        f"\nmain job: exit {code}, wall time {wall:.0f} s ({wall / 60:.1f} min), "
        f"peak memory (PSS) of the process tree {peak / 2**30:.2f} GiB"
    )
    print(f"  sweep (training steps, without the comparison): {sweep_seconds:.1f} s on {host}")
    tracked = sum(r[1] for r in rows)
    trained = sum(r[2] for r in rows)
    for name, t, e in rows:
        print(f"  {name:12s} tracking {t:6.2f} s of training {e:7.1f} s ({t / e:.1%})")
    if trained:
        print(
            f"  tracking overhead, all runs: {tracked:.1f} s of {trained:.0f} s "
            f"({tracked / trained:.2%})"
        )
        print(
            f"  study overhead: wall time {wall:.1f} s for {trained:.1f} s of epochs, "
            f"{wall / trained:.3f}x (host {instruction_set()})"
        )
    if runs is not None:
        print_results(runs, report)
    sys.exit(code)


if __name__ == "__main__":
    main()
