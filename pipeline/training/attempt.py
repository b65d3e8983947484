"""One initialisation in training: its model, optimiser and batch order, all from one
seed, stepped one batch at a time, and saved to (or restored from) a checkpoint."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TrainConfig, TrainingFailed
from pipeline.training.graphs import GraphedStep
from pipeline.training.hardware import Hardware
from pipeline.training.tensors import prepare_model

FINITE_CHECK_EVERY = 10  # steps between loss checks (each one syncs a GPU)
LOG = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 2  # 2: restarts (constant or plateau) replace format 1's collapses

StepCallback = Callable[[], None]
Checkpoint = dict
"""Everything needed to continue training exactly where it stopped: model, optimiser and
batch-order state, the step, the seed kept, the precision trained in, the epochs and
restarts so far, and how many steps replayed a CUDA graph (graph_replays; absent before
it was recorded: 0). Plain tensors, numbers and lists, so that ``torch.load(...,
weights_only=True)`` reads it without unpickling code."""


class NonFiniteLossError(TrainingFailed):
    """The training loss became NaN or infinite."""


def check_finite(loss_sum: torch.Tensor, where: str) -> float:
    """The loss as a number (the one copy to the host, which waits for a GPU); raises
    unless it is finite."""
    value = loss_sum.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(f"training loss became {value} at {where}")
    return value


def _make_optimizer(model: nn.Module, cfg: TrainConfig, hw: Hardware) -> torch.optim.Optimizer:
    # The fused kernel, on the CPU and on CUDA: one pass over the parameters per step.
    # The parameters stay float32 whatever the precision (autocast casts them per use).
    # A graph may capture its step only if it is `capturable` (the fused kernel computes
    # alike either way).
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True, capturable=hw.cuda_graphs)


@dataclass
class Partial:
    """An epoch in progress: its batches, how many are trained, their loss sum, seconds."""

    batches: list[torch.Tensor]
    done: int
    loss_sum: torch.Tensor
    seconds: float


class Attempt:
    """One initialisation: model, optimiser and batch order from one seed."""

    def __init__(
        self,
        build: Callable[[], nn.Module],
        seed: int,
        cfg: TrainConfig,
        hardware: Hardware,
        on_step: StepCallback | None,
    ) -> None:
        torch.manual_seed(seed)
        self.seed, self.on_step, self.batch_size = seed, on_step, cfg.batch_size
        self.hardware = hardware
        self.model = prepare_model(build(), hardware.device)
        self.optimizer = _make_optimizer(self.model, cfg, hardware)
        self.graphed: GraphedStep | None = None  # captured at the first full batch
        self.capture_failed = False  # then every step of this attempt runs eagerly
        self.replays_before = 0  # steps replayed by graphs given up (a resume's, a checkpoint's)
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0
        self.partial: Partial | None = None  # the first epoch, where the window ended in it

    def batches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The index batches of one epoch, in this attempt's next shuffled order."""
        order = torch.randperm(len(x), generator=self.generator).to(x.device, non_blocking=True)
        return list(order.split(self.batch_size))

    @property
    def graph_replays(self) -> int:
        """How many of this attempt's steps replayed a captured graph."""
        return self.replays_before + (self.graphed.replays if self.graphed else 0)

    def train_step(self, batch: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch; returns the batch's (detached) mean loss. With
        CUDA graphs a full batch replays the step captured at the first one; a shorter one
        (an epoch's last) runs eagerly, and so does every step after a capture that failed."""
        if self._capture_due(batch):
            self.graphed = self._capture(batch)
        if self.graphed is not None and self.graphed.fits(batch):
            loss = self.graphed(batch)
        else:
            loss = self._step(batch)
        self.step += 1
        if self.on_step is not None:
            self.on_step()
        return loss

    def _capture_due(self, batch: torch.Tensor) -> bool:
        wanted = self.hardware.cuda_graphs and not self.capture_failed
        return wanted and self.graphed is None and len(batch) == self.batch_size

    def _capture(self, batch: torch.Tensor) -> GraphedStep | None:
        """The step captured on the batch's shape; None where the capture fails, with a
        loud warning: this attempt then trains eagerly, from the weights and optimiser
        state the failed capture left as they were, and records no replays for it."""
        try:
            return GraphedStep(self._step, self.model, self.optimizer, batch)
        except Exception as exc:  # whatever CUDA raised: the run goes on without the graph
            self.capture_failed = True
            why = (str(exc).splitlines() or [""])[0]
            message = (
                f"CUDA graph capture failed at step {self.step} of seed {self.seed} "
                f"({type(exc).__name__}: {why}); training goes on eagerly, kernel by kernel"
            )
            LOG.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return None

    def _step(self, batch: torch.Tensor) -> torch.Tensor:
        """The step itself. In bf16 only the forward runs under autocast: the loss is
        float32, of the output cast to float32, and needs no gradient scaling (bfloat16
        has float32's range)."""
        with self.hardware.autocast():
            out = self.model(batch)
        loss = F.mse_loss(out.float(), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state(self, history: list, restarts: list) -> Checkpoint:
        """The checkpoint after the last of history's epochs (EpochResult and Restart
        dataclasses)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": history[-1].epoch,
            "seed": self.seed,
            "precision": self.hardware.precision,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "graph_replays": self.graph_replays,
            "history": [asdict(r) for r in history],
            "restarts": [asdict(r) for r in restarts],
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])  # new state tensors: ...
        self.graphed = None  # ... a graph captured before would update the old ones
        self.replays_before = checkpoint.get("graph_replays", 0)
        for group in self.optimizer.param_groups:  # the checkpoint's may be another device's
            group["capturable"] = self.hardware.cuda_graphs
        self.generator.set_state(checkpoint["generator"])
        self.step = checkpoint["step"]
