"""The training loop: plain functions, no tracking.

Callers observe training through callbacks (``on_epoch_end``, ``on_restart``,
``on_checkpoint``, ``on_step``); this module never imports a tracker.

Training has two phases. First a healthy initialisation is picked (pipeline.training.restarts).
Then training goes on from where its window stopped, through every epoch (from the
initialisation again only when the window outlasted the first epoch), exactly as if it
had been trained in one go.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from pipeline.config import TrainConfig
from pipeline.training.attempt import (
    CHECKPOINT_FORMAT,
    FINITE_CHECK_EVERY,
    Attempt,
    Checkpoint,
    Partial,
    StepCallback,
    check_finite,
)
from pipeline.training.datasets import ImageData
from pipeline.training.hardware import Hardware, resolve_hardware
from pipeline.training.health import PROBE_SIZE, has_diverged, is_constant, look
from pipeline.training.restarts import (
    CollapseError,
    DivergedError,
    Restart,
    RestartCallback,
    choose_init,
)
from pipeline.training.tensors import (
    EVAL_BATCH,
    evaluate,
    flush_denormals,
    per_pixel,
    squared_error,
    to_model_input,
)

# The per-epoch gap compares test MSE with the training MSE of the same weights, measured
# on this many fixed training images (the first ones): as many as the test set holds, at
# a sixth of the cost of the whole training set. A multiple of EVAL_BATCH: after the last
# epoch the pass over the whole training set goes on from these images (see _FinalPass).
TRAIN_EVAL_SIZE = 10_000
assert TRAIN_EVAL_SIZE % EVAL_BATCH == 0


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_mse: float
    """Per-sample mean of the training loss over the epoch's batches (the weights change
    as it is measured, so it lags the end-of-epoch model)."""
    test_mse: float
    """Per-sample mean over the test set after the epoch."""
    train_eval_mse: float
    """Per-sample mean over the first TRAIN_EVAL_SIZE training images after the epoch:
    the same weights as test_mse, so test_mse - train_eval_mse is the epoch's gap."""
    seconds: float
    images_per_second: float


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochResult]
    init_seed: int
    """The seed of the initialisation that was kept (see restart_seed)."""
    restarts: list[Restart] = field(default_factory=list)
    final_train_mse: float = float("nan")
    """Per-sample MSE over the whole training set with the final weights."""
    train_codes: torch.Tensor | None = None
    """The training set's codes with the final weights (n, d), from the same pass."""
    test_codes: torch.Tensor | None = None
    """The test set's codes with the final weights (n, d), from the last epoch's test MSE."""
    graph_replays: int = 0
    """How many of the kept initialisation's steps replayed a captured CUDA graph (a
    resumed run's before its stop included): 0 where none was captured, or its capture
    failed and every step ran eagerly."""

    @property
    def final(self) -> EpochResult:
        return self.history[-1]

    @property
    def best(self) -> EpochResult:
        return min(self.history, key=lambda r: r.test_mse)

    @property
    def gap(self) -> float:
        return self.final.test_mse - self.final_train_mse


EpochCallback = Callable[[EpochResult, nn.Module], None]
CheckpointCallback = Callable[[Checkpoint], None]


def _train_epoch(att: Attempt, x: torch.Tensor, epoch: int) -> float:
    """One pass over x in a shuffled order (the rest of it, if the health window began
    it: att.partial); returns the per-sample mean loss."""
    att.model.train()
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    part, att.partial = att.partial or Partial(att.batches(x), 0, zero, 0.0), None
    batches, loss_sum = part.batches, part.loss_sum
    seen = sum(len(b) for b in batches[: part.done])
    bar = tqdm(
        batches[part.done :],
        desc=f"epoch {epoch}",
        unit="batch",
        leave=False,
        file=sys.stderr,
        disable=None,
        mininterval=1.0,
        initial=part.done,
        total=len(batches),
    )
    for i, index in enumerate(bar, part.done + 1):
        loss_sum += att.train_step(x[index]).double() * len(index)
        seen += len(index)
        if i % FINITE_CHECK_EVERY == 0 or i == len(batches):
            total = check_finite(loss_sum, f"epoch {epoch}, step {att.step}")
            bar.set_postfix(mse=f"{total / seen:.5f}")
    return loss_sum.item() / len(x)


@dataclass
class _FinalPass:
    """The final weights' evaluation, begun by the last epoch's: the test codes from its
    test MSE, and the pass over the training set that its first TRAIN_EVAL_SIZE images
    (the epoch's train_eval_mse) begin. finish() goes on over the rest, so no image is
    evaluated twice with the same weights."""

    head: torch.Tensor
    """squared_error over the first TRAIN_EVAL_SIZE training images."""
    train_codes: list[torch.Tensor]
    test_codes: list[torch.Tensor]

    def finish(self, model: nn.Module, x_train: torch.Tensor, result: TrainResult) -> None:
        """Set result's final_train_mse, train_codes and test_codes."""
        rest = x_train[TRAIN_EVAL_SIZE:]
        total = squared_error(model, rest, codes=self.train_codes, total=self.head)
        result.final_train_mse = per_pixel(total, x_train)
        result.train_codes = torch.cat(self.train_codes).cpu()
        result.test_codes = torch.cat(self.test_codes).cpu()


def _evaluate_epoch(
    model: nn.Module, x_train: torch.Tensor, x_test: torch.Tensor, last: bool
) -> tuple[float, float, _FinalPass | None]:
    """An epoch's test_mse and train_eval_mse; after the last epoch also the final pass
    they begin, with their codes."""
    head = x_train[:TRAIN_EVAL_SIZE]
    test_codes, train_codes = ([], []) if last else (None, None)
    test_mse = evaluate(model, x_test, codes=test_codes)
    head_error = squared_error(model, head, codes=train_codes)
    final = _FinalPass(head_error, train_codes, test_codes) if last else None
    return test_mse, per_pixel(head_error, head), final


def _run_epochs(
    att: Attempt,
    data: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    history: list[EpochResult],
    after_epoch: Callable[[EpochResult], None],
    log: Callable[[str], None],
) -> _FinalPass:
    """Train from the epoch after `history` to cfg.epochs, appending each epoch's result
    and passing it to after_epoch; returns the last epoch's evaluation, to be finished.
    A constant output now cannot be undone, nor a divergence: either raises."""
    x_train, x_test = data
    probe, final = x_train[:PROBE_SIZE], None
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        start = time.perf_counter() - (att.partial.seconds if att.partial else 0.0)
        train_mse = _train_epoch(att, x_train, epoch)
        train_seconds = time.perf_counter() - start
        seen = look(att.model, probe, att.step)
        if is_constant(seen):
            raise CollapseError(
                f"model collapsed to a constant output at epoch {epoch}, step {att.step} "
                f"(seed {att.seed}, output std {seen.output_std:.1e})"
            )
        if has_diverged(seen):
            raise DivergedError.at(seen, f"epoch {epoch}", cfg)
        last = epoch == cfg.epochs
        test_mse, train_eval_mse, final = _evaluate_epoch(att.model, x_train, x_test, last)
        result = EpochResult(
            epoch=epoch,
            train_mse=train_mse,
            test_mse=test_mse,
            train_eval_mse=train_eval_mse,
            seconds=time.perf_counter() - start,
            images_per_second=len(x_train) / train_seconds,
        )
        log(
            f"epoch {epoch}/{cfg.epochs}  train_mse {train_mse:.5f}  test_mse {test_mse:.5f}  "
            f"{result.images_per_second:,.0f} img/s  {result.seconds:.1f} s"
        )
        history.append(result)
        after_epoch(result)
    assert final is not None, "check_resumable leaves the last epoch to train"
    return final


def fit(
    build: Callable[[], nn.Module],
    data: ImageData,
    cfg: TrainConfig,
    on_epoch_end: EpochCallback | None = None,
    on_restart: RestartCallback | None = None,
    on_step: StepCallback | None = None,
    log: Callable[[str], None] = print,
    on_checkpoint: CheckpointCallback | None = None,
    resume: Checkpoint | None = None,
    hardware: Hardware | None = None,
) -> TrainResult:
    """Train a model from ``build()`` on data.train, evaluating on data.test every epoch.

    First choose_init picks a healthy initialisation (each failed one is reported through
    on_restart), then training goes on from it. on_step() runs after every optimiser
    step (for example to stop on request). After every epoch on_checkpoint(state) gets the
    state, then on_epoch_end the result; fit(..., resume=state) continues from there with
    the same result as an uninterrupted run (on the CPU, bit for bit), in the precision it
    began in. `hardware` is how to train (default: what cfg asks for on this machine,
    resolve_hardware).
    """
    if hardware is None:
        hardware = resolve_hardware(cfg, resume.get("precision") if resume else None)
    with hardware.settings():  # on CUDA: deterministic kernels, TF32 off; restored after
        flush_denormals()  # for this thread at least; see flush_denormals
        x_train = to_model_input(data.train.images, hardware.device)
        x_test = to_model_input(data.test.images, hardware.device)
        if resume is None:
            att, restarts = choose_init(build, x_train, cfg, hardware, on_restart, on_step, log)
            if att.partial is None:  # the window outlasted the first epoch: train that again
                att = Attempt(build, att.seed, cfg, hardware, on_step)
            history = []
        else:
            att, restarts, history = _resumed(build, resume, cfg, hardware, on_step, log)

        def after_epoch(result: EpochResult) -> None:
            if on_checkpoint is not None:  # before the epoch is recorded: see Checkpoint
                on_checkpoint(att.state(history, restarts))
            if on_epoch_end is not None:
                on_epoch_end(result, att.model)

        final = _run_epochs(att, (x_train, x_test), cfg, history, after_epoch, log)
        result = TrainResult(
            att.model, history, att.seed, restarts, graph_replays=att.graph_replays
        )
        final.finish(att.model, x_train, result)  # check_resumable: the last epoch ran here
        return result


def _resumed(
    build: Callable[[], nn.Module],
    resume: Checkpoint,
    cfg: TrainConfig,
    hardware: Hardware,
    on_step: StepCallback | None,
    log: Callable[[str], None],
) -> tuple[Attempt, list[Restart], list[EpochResult]]:
    """The attempt, restarts and epochs a checkpoint holds, to continue from."""
    check_resumable(resume, cfg)
    att = Attempt(build, resume["seed"], cfg, hardware, on_step)
    att.restore(resume)
    log(f"resuming after epoch {resume['epoch']} (step {att.step}, seed {att.seed})")
    restarts = [Restart(**r) for r in resume["restarts"]]
    return att, restarts, [EpochResult(**r) for r in resume["history"]]


def check_resumable(checkpoint: Checkpoint, cfg: TrainConfig) -> None:
    """ValueError unless fit(..., resume=checkpoint) can continue with cfg."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint format {checkpoint.get('format')!r} is not this version's "
            f"({CHECKPOINT_FORMAT}): train the run again"
        )
    if checkpoint["epoch"] >= cfg.epochs:
        raise ValueError(
            f"the checkpoint is of epoch {checkpoint['epoch']}, the last of {cfg.epochs}: "
            "nothing is left to train"
        )
