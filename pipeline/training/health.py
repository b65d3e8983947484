"""Training health: whether a fresh initialisation learns, decided in its first steps.

Two ways of not learning are seen on this model (docs/training-health.md):

- **constant**: the output stops depending on the input. The reconstructions of the
  probe digits no longer vary (largest per-pixel standard deviation under CONSTANT_STD).
  Most such initialisations never recover, but some do within the window (d=10, seed 2
  on an Intel AVX-512 host: constant at step 25, learning by step 175), so a constant
  output is judged at the end of the window like the plateau, not at once.
- **plateau**: the output still varies, but sits at the loss of the all-black output
  (pre-sigmoid outputs pushed far negative, vanishing gradients). It may leave the
  plateau after epochs, or never.

A third way is the learning rate's, not the initialisation's: **diverged**, the loss far
above the all-black output's. No restart mends it, so it fails the run at once.

The thresholds below were chosen from `python -m benchmarks.health --init pytorch` (the
exercise's initialisation), which trains every latent size at seeds 0-9 through the
window and then to the end of one epoch. From the model's default He initialisation all
40 of those runs learned; the check stays for the hosts and seeds not measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.training.tensors import float32

HEALTHY, CONSTANT, PLATEAU, DIVERGED = "healthy", "constant", "plateau", "diverged"

CONSTANT_STD = 1e-4
"""Measured: healthy models' reconstructions vary by at least 2.7e-3 at every look;
collapsing ones fall under 5e-5 within 25 steps."""
PLATEAU_RATIO = 0.8
"""A model whose probe MSE is still at least this fraction of the all-black output's MSE
at the end of the window is on the plateau (see the table in docs/training-health.md)."""
DIVERGED_RATIO = 10.0
"""A model whose probe MSE is at least this multiple of the all-black output's once the
window is over has diverged: its steps overshoot (the learning rate is too large for it),
which no other initialisation mends. No output within [0, 1] gets there (the worst one
reaches 8.70x on the probe digits), so a sigmoid output never counts as diverged, only an
unbounded one that grows. Measured: no look at any step of the 80 runs of docs/training-health.md's
two tables came above 1.05."""
HEALTH_WINDOW = 200
"""Steps an initialisation trains before it is judged."""
PROBE_SIZE = 256
"""The probe: this many fixed training digits (the first ones)."""


@dataclass(frozen=True)
class Look:
    """The model as seen on the probe digits after `step` optimiser steps."""

    step: int
    output_std: float
    """Largest per-pixel standard deviation of the reconstructions across the probe."""
    loss: float
    """Per-pixel MSE of the reconstructions."""
    black_ratio: float
    """loss over the MSE of an all-black output on the same digits (1.0: no better)."""


@dataclass(frozen=True)
class Verdict:
    state: str
    """HEALTHY, CONSTANT or PLATEAU."""
    look: Look
    """The look it was decided at."""

    @property
    def healthy(self) -> bool:
        return self.state == HEALTHY

    def describe(self) -> str:
        look = self.look
        what = {
            CONSTANT: "constant output",
            PLATEAU: "stuck at the all-black loss",
            DIVERGED: "diverged",
            HEALTHY: "healthy",
        }[self.state]
        return (
            f"{what} at step {look.step} (output std {look.output_std:.1e}, probe MSE "
            f"{look.loss:.4f}, {look.black_ratio:.2f}x the all-black output's)"
        )


@torch.inference_mode()
def look(model: nn.Module, probe: torch.Tensor, step: int) -> Look:
    """Reconstruct the probe digits once and measure spread and loss."""
    was_training = model.training
    model.eval()
    with float32(probe.device):  # as the recorded MSEs, whatever the training precision
        out = model(probe).float()
    model.train(was_training)
    loss = F.mse_loss(out, probe).item()
    black = probe.float().pow(2).mean().item()
    return Look(step, out.std(dim=0).max().item(), loss, loss / black)


def is_constant(seen: Look) -> bool:
    return seen.output_std < CONSTANT_STD


def has_diverged(seen: Look) -> bool:
    return seen.step >= HEALTH_WINDOW and seen.black_ratio >= DIVERGED_RATIO


def judge(seen: Look) -> Verdict:
    """The verdict on a look at the end of the window. A run too short to reach
    HEALTH_WINDOW steps is judged, at its end, on a constant output alone."""
    if is_constant(seen):
        return Verdict(CONSTANT, seen)
    if has_diverged(seen):
        return Verdict(DIVERGED, seen)
    if seen.step >= HEALTH_WINDOW and seen.black_ratio >= PLATEAU_RATIO:
        return Verdict(PLATEAU, seen)
    return Verdict(HEALTHY, seen)


def output_spread(model: nn.Module, x: torch.Tensor) -> float:
    """Largest per-pixel standard deviation of the reconstructions across the batch x."""
    return look(model, x, 0).output_std
