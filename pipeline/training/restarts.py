"""Picking a healthy initialisation: each seed (the configured one, then its restart
seeds) trains through the health window and is judged by pipeline.training.health; the first that
passes is kept, and goes on training from where its window stopped."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import MAX_SEED, TrainConfig, TrainingFailed
from pipeline.training.attempt import (
    FINITE_CHECK_EVERY,
    Attempt,
    Partial,
    StepCallback,
    check_finite,
)
from pipeline.training.hardware import Hardware
from pipeline.training.health import DIVERGED, HEALTH_WINDOW, PROBE_SIZE, Look, Verdict, judge, look

# Restart k of seed s initialises from seed s + k * RESTART_STRIDE. With the next seed
# (s + 1), the seeds of one study would share initialisations: seed 0 restarted would
# train exactly as seed 1 does, and its spread would shrink. TrainConfig keeps seeds
# under the stride.
RESTART_STRIDE = MAX_SEED


class CollapseError(TrainingFailed):
    """No initialisation learned, or the model stopped learning after epochs were recorded."""


class DivergedError(TrainingFailed):
    """The model's loss rose far above the all-black output's: the learning rate is too
    large for it (pipeline.training.health.DIVERGED_RATIO)."""

    @classmethod
    def at(cls, seen: Look, where: str, cfg: TrainConfig) -> DivergedError:
        return cls(
            f"training diverged at {where}, step {seen.step}: probe MSE {seen.loss:.3g}, "
            f"{seen.black_ratio:.3g}x the all-black output's; lower lr (now {cfg.lr:g})"
        )


@dataclass(frozen=True)
class Restart:
    """An initialisation that failed the health check and was replaced by a restart seed."""

    attempt: int
    seed: int
    reason: str
    """pipeline.training.health.CONSTANT or PLATEAU."""
    step: int
    output_std: float
    loss: float
    """The probe digits' MSE when it was judged."""
    black_ratio: float

    @classmethod
    def of(cls, attempt: int, seed: int, verdict: Verdict) -> Restart:
        seen = verdict.look
        return cls(
            attempt, seed, verdict.state, seen.step, seen.output_std, seen.loss, seen.black_ratio
        )


RestartCallback = Callable[[Restart], None]


def health_window(att: Attempt, x: torch.Tensor, probe: torch.Tensor, total_steps: int) -> Verdict:
    """Train a fresh attempt through the health window (or the whole run, if that is
    shorter), then look at the probe; return the verdict. A window that ends inside the
    first epoch leaves that epoch in att.partial, so that training goes on from there
    instead of from the initialisation again."""
    window = min(HEALTH_WINDOW, total_steps)
    start = time.perf_counter()
    att.model.train()
    for first in itertools.chain([True], itertools.repeat(False)):
        batches = att.batches(x)
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        for done, index in enumerate(batches, 1):
            loss = att.train_step(x[index])
            loss_sum += loss.double() * len(index)  # as an epoch sums it
            if att.step % FINITE_CHECK_EVERY == 0:
                check_finite(loss, f"step {att.step} of seed {att.seed}'s health window")
            if att.step == window:
                seconds = time.perf_counter() - start
                att.partial = Partial(batches, done, loss_sum, seconds) if first else None
                return judge(look(att.model, probe, att.step))
    raise AssertionError("unreachable: the window always ends")


def restart_seed(seed: int, attempt: int) -> int:
    """The seed of attempt `attempt` (0: the configured seed itself) of `seed`."""
    return seed + attempt * RESTART_STRIDE


def choose_init(
    build: Callable[[], nn.Module],
    x: torch.Tensor,
    cfg: TrainConfig,
    hardware: Hardware,
    on_restart: RestartCallback | None = None,
    on_step: StepCallback | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Attempt, list[Restart]]:
    """The first of cfg.seed and its restart seeds whose initialisation passes the health
    window, as trained through the window, and the restarts it took. Raises
    CollapseError after cfg.max_restarts failed restarts, and DivergedError at once: a
    learning rate too large for the model fails every seed alike."""
    total_steps = cfg.epochs * math.ceil(len(x) / cfg.batch_size)
    restarts: list[Restart] = []
    for attempt in range(cfg.max_restarts + 1):
        seed = restart_seed(cfg.seed, attempt)
        att = Attempt(build, seed, cfg, hardware, on_step)
        verdict = health_window(att, x, x[:PROBE_SIZE], total_steps)
        if verdict.healthy:
            return att, restarts
        if verdict.state == DIVERGED:
            raise DivergedError.at(verdict.look, f"the end of seed {seed}'s health window", cfg)
        restarts.append(Restart.of(attempt, seed, verdict))
        following = restart_seed(cfg.seed, attempt + 1)
        log(f"seed {seed}: {verdict.describe()}; restarting from seed {following}")
        if on_restart is not None:
            on_restart(restarts[-1])
    raise CollapseError(
        f"no initialisation learned: seed {cfg.seed} and its {cfg.max_restarts} restart "
        f"seeds (up to {restart_seed(cfg.seed, cfg.max_restarts)}) all failed the health "
        f"check (last: {verdict.describe()}); raise max_restarts, try another seed or lower lr "
        f"(now {cfg.lr:g})"
    )
