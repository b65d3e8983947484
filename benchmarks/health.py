"""Health benchmark: how fresh initialisations of the conv autoencoder fare in their first
steps, and whether the health check (pipeline/training/health.py) restarts exactly the stuck ones.

For every latent size and seed it trains the model as `fit` would (same seed, same batch
order, full training set), looks at the probe digits every PROBE_EVERY steps, and goes on
to the end of the first epoch. It prints, per (d, seed), the verdict the health check
reaches at the end of the window and the probe loss there, the probe loss as a fraction
of the all-black output's at every look (marked where the output was constant), and the
test MSE after the first epoch.

What happened, from what the check cannot see (the rest of the epoch):
- learned: left the all-black loss inside the window; epoch-1 test MSE <= STUCK_MSE.
- stuck: epoch-1 test MSE above STUCK_MSE (the study's target for any kept run).
- late: still at the all-black loss (or constant) at the end of the window, yet under
  STUCK_MSE after the epoch: it escaped between the window's end and the epoch's.
A verdict is wrong when it keeps a stuck run (a miss) or restarts a run that had left
the all-black loss by the end of the window (a false restart). Restarting a late run is
the price of deciding after 200 steps: it sat at the all-black loss all that time.

    .venv/bin/python -m benchmarks.health                      # d = 3, 10, 100, 250; seeds 0-9
    .venv/bin/python -m benchmarks.health --init pytorch       # the exercise's initialisation
    .venv/bin/python -m benchmarks.health --precision bf16     # training forward under autocast
    .venv/bin/python -m benchmarks.health --dims 3 --seeds 0,1 --train-limit 4096   # smoke size
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from pipeline.config import PRECISIONS, ConfigError, TrainConfig
from pipeline.training.attempt import Attempt
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import Hardware, resolve_hardware
from pipeline.training.health import (
    HEALTH_WINDOW,
    PLATEAU_RATIO,
    PROBE_SIZE,
    Look,
    is_constant,
    judge,
    look,
)
from pipeline.training.models import CONV_INITS, ConvAutoencoder
from pipeline.training.tensors import evaluate, flush_denormals, to_model_input
from tracking.host import cpu_model, instruction_set

STUCK_MSE = 0.07  # above this test MSE after one epoch, a run has not learned
PROBE_EVERY = 25  # steps between the looks this benchmark prints (fit looks at the end only)


def trial(
    d: int, seed: int, init: str, hw: Hardware, x: torch.Tensor, x_test: torch.Tensor, steps: int
):
    """Train one (d, seed) for `steps` steps on hw; the verdict as fit reaches it, the
    looks, and the test MSE at the end (looks and MSE in float32, as fit computes them)."""
    cfg = TrainConfig(seed=seed, precision=hw.precision, device=hw.device.type)
    att = Attempt(lambda: ConvAutoencoder(d, init=init), seed, cfg, hw, None)
    probe = x[:PROBE_SIZE]
    verdict, looks = None, []
    while att.step < steps:
        for index in att.batches(x):
            att.train_step(x[index])
            if att.step % PROBE_EVERY == 0 and att.step <= HEALTH_WINDOW:
                looks.append(look(att.model, probe, att.step))
            if att.step == HEALTH_WINDOW:
                verdict = judge(looks[-1])
            if att.step >= steps:
                break
    return verdict, looks, evaluate(att.model, x_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="3,10,100,250")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--init", choices=CONV_INITS, default=CONV_INITS[0])
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0])
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument(
        "--steps", type=int, default=0, help="steps per trial (0: one epoch; at least the window)"
    )
    args = parser.parse_args()
    try:
        hw = resolve_hardware(TrainConfig(device="cpu", precision=args.precision))
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    flush_denormals()
    Mnist().ensure(args.data_dir)
    data = Mnist().load(args.data_dir, train_limit=args.train_limit, log=lambda _: None)
    cpu = torch.device("cpu")
    x, x_test = (to_model_input(s.images, cpu) for s in (data.train, data.test))
    steps = max(args.steps or math.ceil(len(x) / TrainConfig().batch_size), HEALTH_WINDOW)
    print(
        f"host: {cpu_model()}, {instruction_set()}, {torch.get_num_threads()} threads; "
        f"init {args.init}; precision {args.precision} ({hw.precision}); "
        f"window {HEALTH_WINDOW} steps, probe every {PROBE_EVERY}; "
        f"plateau at >= {PLATEAU_RATIO} x the all-black loss; stuck: test MSE > {STUCK_MSE} "
        f"after {steps} steps"
    )
    print(
        f"{'d':>4} {'seed':>4}  {'verdict':8} {'step':>4}  {'probe MSE':>9} {'x black':>7}  "
        f"{'x black by step (25, 50, ... 200; c: constant)':55}  {'test MSE':>8}  "
        "outcome  verdict is"
    )
    tally: dict[str, int] = {}
    for d in (int(v) for v in args.dims.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            start = time.perf_counter()
            verdict, looks, test_mse = trial(d, seed, args.init, hw, x, x_test, steps)
            outcome, right = classify(verdict, looks[-1], test_mse)
            tally[outcome] = tally.get(outcome, 0) + 1
            tally[right] = tally.get(right, 0) + 1
            ratios = " ".join(  # c: the output was constant at that look
                f"{seen.black_ratio:.2f}{'c' if is_constant(seen) else ''}" for seen in looks
            )
            seen = verdict.look
            print(
                f"{d:>4} {seed:>4}  {verdict.state:8} {seen.step:>4}  {seen.loss:9.4f} "
                f"{seen.black_ratio:7.2f}  {ratios:55}  {test_mse:8.5f}  {outcome:7}  {right}"
                f"  ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    print("\n" + ", ".join(f"{key}: {n}" for key, n in sorted(tally.items())))


def classify(verdict, end: Look, test_mse: float) -> tuple[str, str]:
    """(outcome, whether the verdict was right) for one trial; `end` is the look at the
    end of the window."""
    at_black = is_constant(end) or end.black_ratio >= PLATEAU_RATIO
    if test_mse > STUCK_MSE:
        outcome = "stuck"
    elif verdict.healthy or not at_black:
        outcome = "learned"
    else:
        outcome = "late"
    if verdict.healthy:
        return outcome, "right" if outcome == "learned" else "a MISS"
    return outcome, "right" if outcome in ("stuck", "late") else "a FALSE restart"


if __name__ == "__main__":
    main()
