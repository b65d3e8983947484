"""Repeat benchmark: the same main job twice, the same seeds, and whether every training
run's final test MSE came out the same, bit for bit.

Runs `python -m mlflow run <project> -e main` (as `benchmarks.study` does) in one fresh
folder, then again with `force=true` (so that the second trains every step instead of
reusing the first's), on the same store. Prints each job's wall time and sweep seconds, then per
configuration and seed both MSEs and whether they are equal, and one line with the verdict.
On a GPU the project's defaults (deterministic kernels) are what make them equal.

    .venv/bin/python -m benchmarks.repeat                       # the default study, twice
    .venv/bin/python -m benchmarks.repeat -P seeds=0,1 -P parallel=2
    .venv/bin/python -m benchmarks.repeat -P epochs=1 -P train_limit=2048 -P test_limit=512
    python -m benchmarks.repeat -P latent_dims=100 -P epochs=2 -P train_limit=8192   # gpu.sh
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from mlflow import MlflowClient

from benchmarks.study import job_env, job_parser, main_job, run_measured, study_runs
from tracking import names
from tracking.host import describe


def final_mses(store: str) -> dict[str, dict[tuple[str, int], float]]:
    """Per sweep (by run id): every FINISHED child training run's final test MSE, by
    configuration and seed."""
    client = MlflowClient(store)
    found: dict[str, dict[tuple[str, int], float]] = {}
    for run in study_runs(client, names.ROLE_TRAIN):
        if run.info.status != "FINISHED":
            continue
        params = run.data.params
        config = names.config_name(params["model_kind"], params["latent_dim"])
        sweep = found.setdefault(run.data.tags[names.TAG_PARENT_RUN], {})
        sweep[config, int(params["seed"])] = run.data.metrics[names.FINAL_TEST_MSE]
    return found


def main() -> None:
    args = job_parser(__doc__).parse_args()
    if any(p.startswith("force=") for p in args.params):
        sys.exit("error: the benchmark sets force itself; leave out -P force")
    with tempfile.TemporaryDirectory(prefix="repeat-bench-") as tmp:
        for i, extra in enumerate(([], ["force=true"]), 1):
            wall, _, code = run_measured(main_job([*args.params, *extra]), Path(tmp), job_env())
            if code != 0:
                sys.exit(f"error: main job {i} exited {code}")
            print(f"main job {i}: wall time {wall:.1f} s", flush=True)
        store = f"sqlite:///{tmp}/mlflow.db"
        sweeps = sorted(
            study_runs(MlflowClient(store), names.ROLE_SWEEP), key=lambda r: r.info.start_time
        )
        mses = final_mses(store)
    first, second = (mses[s.info.run_id] for s in sweeps)
    print(f"\nhost: {describe(sweeps[0].data.tags)}")
    for i, sweep in enumerate(sweeps, 1):
        print(f"  sweep {i}: {sweep.data.metrics.get(names.SWEEP_SECONDS, float('nan')):.1f} s")
    equal = first.keys() == second.keys()
    for key in sorted(first.keys() | second.keys()):
        a, b = first.get(key, float("nan")), second.get(key, float("nan"))
        equal &= a == b
        print(f"  {key[0]:11s} seed {key[1]}: {a!r:24s} {b!r:24s} {'same' if a == b else 'DIFFER'}")
    print(f"the same seed gave the same final test MSE at every run: {'yes' if equal else 'NO'}")


if __name__ == "__main__":
    main()
