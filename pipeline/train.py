"""The training loop: plain functions, no tracking.

Callers observe training through callbacks (``on_epoch_end``, ``on_collapse``,
``on_checkpoint``, ``on_step``); this module never imports a tracker.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline.config import TrainConfig
from pipeline.data import Mnist

# Collapse: a ReLU layer dies and the output stops depending on the input (the
# exercise's d=3 and d=10 runs sat at the all-black output for all ten epochs).
# Measured on d=3 and d=10, seeds 0-7, 300 steps: healthy models' reconstructions of
# 256 digits vary by at least 2.7e-3 at every probe; collapsing ones fall under 5e-5
# within 25 steps and, but for one slow recovery after 200 steps, stay under 3e-6.
# A fresh initialisation costs far less than waiting for that rare recovery.
COLLAPSE_STD = 1e-4
PROBE_EVERY = 25  # steps between collapse probes
# A collapse inside this many steps restarts training from a fresh initialisation.
# Epochs that end inside it (only on small data) are reported once it has passed, so
# that nothing from a discarded initialisation reaches the caller.
COLLAPSE_WINDOW = 200
PROBE_SIZE = 256
FINITE_CHECK_EVERY = 10  # steps between loss checks (each one syncs a GPU)
EVAL_BATCH = 1000
# The per-epoch gap compares test MSE with the training MSE of the same weights, measured
# on this many fixed training images (the first ones): as many as the test set holds, at
# a sixth of the cost of the whole training set.
TRAIN_EVAL_SIZE = 10_000


class CollapseError(RuntimeError):
    """The model collapsed to a constant output and could not be recovered."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


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


@dataclass(frozen=True)
class CollapseEvent:
    attempt: int
    seed: int
    epoch: int
    step: int
    output_std: float
    loss: float


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochResult]
    init_seed: int
    """The seed of the initialisation that was kept (config seed + number of restarts)."""
    collapses: list[CollapseEvent] = field(default_factory=list)
    final_train_mse: float = float("nan")
    """Per-sample MSE over the whole training set with the final weights."""


EpochCallback = Callable[[EpochResult, nn.Module], None]
StepCallback = Callable[[int], None]
CollapseCallback = Callable[[CollapseEvent], None]
Checkpoint = dict
"""Everything needed to continue training exactly where it stopped: model, optimiser and
batch-order state, the step, the seed kept, and the epochs and collapses so far. Plain
tensors, numbers and lists, so that ``torch.load(..., weights_only=True)`` reads it
without unpickling code."""
CheckpointCallback = Callable[[Checkpoint], None]
CHECKPOINT_FORMAT = 1


def flush_denormals() -> None:
    """Treat subnormal floats as zero on the CPU.

    Gradients through saturated sigmoids and Adam's second moments drift into subnormal
    floats, which x86 CPUs process many times slower (measured: a small run took 3x as
    long without this); flushing them changes no logged loss in its first five digits.
    The setting is per thread and torch's worker threads copy it when they are created,
    so entry points call this first, before torch runs anything in parallel.
    """
    torch.set_flush_denormal(True)


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available")
    return torch.device(name)


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (n, 28, 28) -> float (n, 1, 28, 28) in [0, 1] on device, channels_last."""
    x = images.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device=device, memory_format=torch.channels_last)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Per-sample, per-pixel mean squared error of model(x) against x."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size]
        total += F.mse_loss(model(batch), batch, reduction="sum").double()
    return total.item() / x[0].numel() / len(x)


@torch.inference_mode()
def output_spread(model: nn.Module, x: torch.Tensor) -> float:
    """Largest per-pixel standard deviation of the reconstructions across the batch x."""
    model.eval()
    return model(x).float().std(dim=0).max().item()


def is_collapsed(model: nn.Module, probe: torch.Tensor) -> bool:
    return output_spread(model, probe) < COLLAPSE_STD


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # foreach on CUDA; fused kernel on the CPU (one pass over the parameters per step).
    fused = next(model.parameters()).device.type == "cpu"
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=fused)


class _Attempt:
    """One initialisation: model, optimiser and batch order from one seed."""

    def __init__(
        self, build: Callable[[], nn.Module], seed: int, cfg, device, on_step: StepCallback | None
    ) -> None:
        torch.manual_seed(seed)
        self.seed, self.on_step = seed, on_step
        self.model = prepare_model(build(), device)
        self.optimizer = _make_optimizer(self.model, cfg)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0

    def state(self, history: list[EpochResult], collapses: list[CollapseEvent]) -> Checkpoint:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": history[-1].epoch,
            "seed": self.seed,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "history": [asdict(r) for r in history],
            "collapses": [asdict(c) for c in collapses],
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.generator.set_state(checkpoint["generator"])
        self.step = checkpoint["step"]


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss_sum).item():
        raise NonFiniteLossError(
            f"training loss became {loss_sum.item()} at epoch {epoch}, step {step}"
        )


def _train_epoch(
    att: _Attempt, x: torch.Tensor, probe: torch.Tensor, cfg: TrainConfig, epoch: int
) -> tuple[float, CollapseEvent | None]:
    """One pass over x in a shuffled order. Returns the mean loss and a collapse, if seen."""
    model, opt = att.model, att.optimizer
    model.train()
    order = torch.randperm(len(x), generator=att.generator).to(x.device, non_blocking=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    starts = range(0, len(x), cfg.batch_size)
    bar = tqdm(
        starts,
        desc=f"epoch {epoch}",
        unit="batch",
        leave=False,
        file=sys.stderr,
        disable=None,
        mininterval=1.0,
    )
    for i, start in enumerate(bar, 1):
        batch = x[order[start : start + cfg.batch_size]]
        loss = F.mse_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        att.step += 1
        if att.on_step is not None:
            att.on_step(att.step)
        loss_sum += loss.detach().double() * len(batch)
        if i % FINITE_CHECK_EVERY == 0 or i == len(starts):
            _check_finite(loss_sum, epoch, att.step)
            bar.set_postfix(mse=f"{loss_sum.item() / min(start + cfg.batch_size, len(x)):.5f}")
        probing = att.step <= COLLAPSE_WINDOW and att.step % PROBE_EVERY == 0
        if probing and is_collapsed(model, probe):
            return float("nan"), _collapse(att, model, probe, epoch, loss.item())
        model.train()
    return loss_sum.item() / len(x), None


def _collapse(att: _Attempt, model, probe, epoch: int, loss: float) -> CollapseEvent:
    return CollapseEvent(
        attempt=0,
        seed=att.seed,
        epoch=epoch,
        step=att.step,
        output_std=output_spread(model, probe),
        loss=loss,
    )


class _Reporter:
    """Passes finished epochs to on_epoch_end, holding back (with a copy of the weights)
    those that end inside the collapse window until it has passed."""

    def __init__(self, build: Callable[[], nn.Module], callback: EpochCallback | None) -> None:
        self.build, self.callback = build, callback
        self.pending: list[tuple[EpochResult, dict]] = []
        self.reported = 0

    @staticmethod
    def reports_now(step: int, last: bool) -> bool:
        """Whether add() passes this epoch (and any held back) on at once; also when the
        epoch gets its checkpoint."""
        return step > COLLAPSE_WINDOW or last

    def add(self, result: EpochResult, model: nn.Module, step: int, last: bool) -> None:
        if self.callback is None:
            return
        if step <= COLLAPSE_WINDOW and not last:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.pending.append((result, state))
            return
        if self.pending:
            shadow = self.build().to(next(model.parameters()).device)
            for held, state in self.pending:
                shadow.load_state_dict(state)
                self._report(held, shadow)
            self.pending = []
        self._report(result, model)

    def _report(self, result: EpochResult, model: nn.Module) -> None:
        self.callback(result, model)
        self.reported += 1


def _run_epochs(
    att: _Attempt,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cfg: TrainConfig,
    reporter: _Reporter,
    log: Callable[[str], None],
    history: list[EpochResult],
    checkpoint: Callable[[list[EpochResult]], None],
) -> list[EpochResult] | CollapseEvent:
    """Train from the epoch after `history` to cfg.epochs. A collapse before any epoch was
    reported is returned so the caller can restart; a later one cannot be undone in the
    record and raises. The checkpoint of an epoch is taken before the epoch is reported,
    so that a recorded epoch always has one."""
    x_train, x_test, probe = data
    x_train_eval = x_train[:TRAIN_EVAL_SIZE]
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        start = time.perf_counter()
        train_mse, collapse = _train_epoch(att, x_train, probe, cfg, epoch)
        train_seconds = time.perf_counter() - start
        if collapse is None and is_collapsed(att.model, probe):
            collapse = _collapse(att, att.model, probe, epoch, train_mse)
        if collapse is not None:
            if reporter.reported:
                raise CollapseError(
                    f"model collapsed to a constant output at epoch {epoch}, step {att.step} "
                    f"(seed {att.seed}), after its first epochs were recorded"
                )
            return collapse
        test_mse = evaluate(att.model, x_test)
        result = EpochResult(
            epoch=epoch,
            train_mse=train_mse,
            test_mse=test_mse,
            train_eval_mse=evaluate(att.model, x_train_eval),
            seconds=time.perf_counter() - start,
            images_per_second=len(x_train) / train_seconds,
        )
        log(
            f"epoch {epoch}/{cfg.epochs}  train_mse {train_mse:.5f}  test_mse {test_mse:.5f}  "
            f"{result.images_per_second:,.0f} img/s  {result.seconds:.1f} s"
        )
        history.append(result)
        last = epoch == cfg.epochs
        if reporter.reports_now(att.step, last):
            checkpoint(history)
        reporter.add(result, att.model, att.step, last)
    return history


def fit(
    build: Callable[[], nn.Module],
    data: Mnist,
    cfg: TrainConfig,
    on_epoch_end: EpochCallback | None = None,
    on_collapse: CollapseCallback | None = None,
    on_step: StepCallback | None = None,
    log: Callable[[str], None] = print,
    on_checkpoint: CheckpointCallback | None = None,
    resume: Checkpoint | None = None,
) -> TrainResult:
    """Train a model from ``build()`` on data.train, evaluating on data.test every epoch.

    A collapse to a constant output within the first COLLAPSE_WINDOW steps restarts
    training from a fresh initialisation with the next seed (architecture and loss
    unchanged), up to cfg.max_restarts times; every collapse is reported through
    on_collapse. A later collapse raises CollapseError. on_step(step) runs after every
    optimiser step (for example to stop on request). on_checkpoint(state) gets the state
    after every epoch, before on_epoch_end sees it; fit(..., resume=state) continues from
    there with the same result as an uninterrupted run (on the CPU, bit for bit).
    """
    device = resolve_device(cfg.device)
    flush_denormals()  # for this thread at least; see flush_denormals
    x_train = to_model_input(data.train.images, device)
    x_test = to_model_input(data.test.images, device)
    tensors = (x_train, x_test, x_train[:PROBE_SIZE])
    collapses: list[CollapseEvent] = []

    def finish(att: _Attempt, history: list[EpochResult]) -> TrainResult:
        result = TrainResult(att.model, history, att.seed, collapses)
        result.final_train_mse = evaluate(att.model, x_train)
        return result

    def checkpoint(att: _Attempt) -> Callable[[list[EpochResult]], None]:
        if on_checkpoint is None:
            return lambda history: None
        return lambda history: on_checkpoint(att.state(history, collapses))

    if resume is not None:
        check_resumable(resume, cfg)
        att = _Attempt(build, resume["seed"], cfg, device, on_step)
        att.restore(resume)
        collapses.extend(CollapseEvent(**c) for c in resume["collapses"])
        history = [EpochResult(**r) for r in resume["history"]]
        reporter = _Reporter(build, on_epoch_end)
        reporter.reported = len(history)  # a collapse now cannot be restarted: it raises
        log(f"resuming after epoch {resume['epoch']} (step {att.step}, seed {att.seed})")
        outcome = _run_epochs(att, tensors, cfg, reporter, log, history, checkpoint(att))
        return finish(att, outcome)
    for attempt in range(cfg.max_restarts + 1):
        att = _Attempt(build, cfg.seed + attempt, cfg, device, on_step)
        reporter = _Reporter(build, on_epoch_end)
        outcome = _run_epochs(att, tensors, cfg, reporter, log, [], checkpoint(att))
        if not isinstance(outcome, CollapseEvent):
            return finish(att, outcome)
        event = CollapseEvent(**{**outcome.__dict__, "attempt": attempt})
        collapses.append(event)
        log(
            f"collapse: seed {event.seed} gives a constant output at step {event.step} "
            f"(output std {event.output_std:.1e}); restarting from a fresh initialisation"
        )
        if on_collapse is not None:
            on_collapse(event)
    raise CollapseError(
        f"model collapsed to a constant output with every seed from {cfg.seed} to "
        f"{cfg.seed + cfg.max_restarts}; raise max_restarts or try another seed"
    )


def check_resumable(checkpoint: Checkpoint, cfg: TrainConfig) -> None:
    """ValueError unless fit(..., resume=checkpoint) can continue with cfg."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unknown checkpoint format {checkpoint.get('format')!r}")
    if checkpoint["epoch"] >= cfg.epochs:
        raise ValueError(
            f"the checkpoint is of epoch {checkpoint['epoch']}, the last of {cfg.epochs}: "
            "nothing is left to train"
        )


@torch.inference_mode()
def reconstruct(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Reconstructions of uint8 images (n, 28, 28) as float (n, 28, 28) in [0, 1] on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    return model(to_model_input(images, device)).squeeze(1).float().cpu()
