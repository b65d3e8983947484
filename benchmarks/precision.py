"""Precision benchmark: the study in float32 and in bfloat16 from the same seeds, and the
rule that decides whether bf16 is as good (what precision=auto may pick).

Runs the main job (`mlflow run <project> -e main`, as `benchmarks.study` does) twice on one
fresh store, once per precision, with the same parameters otherwise (seeds 0,1,2 unless
`-P seeds=` says else). Reuse compares precision, so the second job trains every step
again. Then, per configuration, it prints the float32 and bf16 test MSE of every seed,
their means, the difference of the means, and whether bf16 passes the rule, which is
one-sided (a lower test MSE never counts against bf16):

    bf16's mean at most 2% above float32's, or inside float32's seed range (min to max).

It ends with one line saying whether every configuration passed, and the time of each job.
The rule's other half, a clean health table in bf16, is `benchmarks.health --precision bf16`.

    .venv/bin/python -m benchmarks.precision                  # 10 epochs, seeds 0-2, all data
    .venv/bin/python -m benchmarks.precision -P parallel=2    # two steps at once (a thread each)
    .venv/bin/python -m benchmarks.precision -P epochs=1 -P train_limit=2048 -P test_limit=512
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from benchmarks.study import job_env, job_parser, main_job, run_measured, study_runs
from pipeline.config import ConfigError
from pipeline.training.hardware import FORWARD_PRECISIONS, require_precision
from tracking import names
from tracking.host import bf16_support, cpu_model, instruction_set

MEAN_MARGIN = 0.02  # bf16's mean may be this fraction above float32's (any amount below)...
# ...or lie anywhere inside float32's range over the seeds


def training_runs(store: str) -> pd.DataFrame:
    """Every FINISHED training run of the study: configuration, precision, seed, final test
    MSE and restarts."""
    client = MlflowClient(store)
    rows = [
        {
            "config": names.config_name(params["model_kind"], params["latent_dim"]),
            "precision": params.get(names.PARAM_PRECISION_USED, params["precision"]),
            "seed": int(params["seed"]),
            "mse": run.data.metrics[names.FINAL_TEST_MSE],
            "restarts": int(run.data.metrics.get(names.RESTARTS, 0)),
        }
        for run in study_runs(client, names.ROLE_TRAIN)
        if run.info.status == "FINISHED"
        for params in [run.data.params]
    ]
    return pd.DataFrame(rows)


def passes(diff: float, in_range: bool) -> bool:
    """The one-sided rule: bf16's mean (diff: relative to float32's) is at most
    MEAN_MARGIN above float32's, or inside float32's seed range."""
    return diff <= MEAN_MARGIN or in_range


def verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: float32's seeds, mean and range, bf16's seeds and mean, the
    difference of the means and whether bf16 passes the rule."""
    rows = []
    for config, group in runs.groupby("config"):
        fp32 = group[group["precision"] == "fp32"].sort_values("seed")
        bf16 = group[group["precision"] == "bf16"].sort_values("seed")
        lo, hi, mean = fp32["mse"].min(), fp32["mse"].max(), fp32["mse"].mean()
        diff = bf16["mse"].mean() / mean - 1
        rows.append(
            {
                "config": config,
                "fp32 per seed": ", ".join(f"{v:.5f}" for v in fp32["mse"]),
                "fp32 mean": mean,
                "bf16 per seed": ", ".join(f"{v:.5f}" for v in bf16["mse"]),
                "bf16 mean": bf16["mse"].mean(),
                "bf16 vs fp32": f"{diff:+.2%}",
                "in fp32 range": lo <= bf16["mse"].mean() <= hi,
                "restarts fp32/bf16": f"{fp32['restarts'].sum()}/{bf16['restarts'].sum()}",
                "passes": passes(diff, lo <= bf16["mse"].mean() <= hi),
            }
        )
    return pd.DataFrame(rows)


def refuse(why: str) -> None:
    print(f"error: {why}", file=sys.stderr)
    sys.exit(2)


def check_params(params: list[str]) -> None:
    """Refuse, before the float32 job's hour: a malformed -P, a precision (this benchmark
    sets it), and a device where bf16 would be refused."""
    device = "auto"
    for p in params:
        key, sep, value = p.partition("=")
        if not sep:
            refuse(f"-P takes name=value, not {p!r}")
        if key == "precision":
            refuse("the benchmark runs every precision itself; leave out -P precision")
        if key == "device":
            device = value
    try:
        require_precision("bf16", device)
    except (ConfigError, RuntimeError) as err:  # RuntimeError: a device that is not here
        refuse(str(err))


def main() -> None:
    args = job_parser(__doc__).parse_args()
    check_params(args.params)
    if not any(p.startswith("seeds=") for p in args.params):
        args.params.append("seeds=0,1,2")
    host = f"{cpu_model()}, {instruction_set()}, {bf16_support()}"
    print(f"host: {host}; main with {' '.join(args.params)}", flush=True)
    walls = {}
    with tempfile.TemporaryDirectory(prefix="precision-bench-") as tmp:
        for precision in FORWARD_PRECISIONS:
            print(f"\n== main, precision={precision}", flush=True)
            cmd = main_job([*args.params, f"precision={precision}"])
            wall, _, code = run_measured(cmd, Path(tmp), job_env())
            walls[precision] = wall
            if code != 0:
                refuse(f"the {precision} main job exited {code}")
        runs = training_runs(f"sqlite:///{tmp}/mlflow.db")
    table = verdicts(runs)
    print(f"\nhost: {host}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.5f}"))
    print("\n" + ", ".join(f"{p} main job {w / 60:.1f} min" for p, w in walls.items()))
    passed = bool(table["passes"].all())
    print(f"bf16 passes the rule at every configuration: {'yes' if passed else 'NO'}")


if __name__ == "__main__":
    main()
