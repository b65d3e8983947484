"""Walks through a latent space: decode the straight line between two codes. It shows
what a model's code space holds between two digits. Pure: tensors in, tensors out."""

from __future__ import annotations

import torch
from torch import nn

STEPS = 10
PAIRS = ((1, 7), (3, 8), (4, 9))
"""Digit pairs walked between: the first test image of each digit."""


@torch.inference_mode()
def interpolate(
    model: nn.Module, start: torch.Tensor, end: torch.Tensor, steps: int = STEPS
) -> torch.Tensor:
    """The decoded images (steps, 28, 28) in [0, 1] along the straight line from code
    `start` to code `end` (each (d,)): step 0 decodes start, the last step decodes end."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, not {steps}")
    model.eval()
    t = torch.linspace(0.0, 1.0, steps, dtype=start.dtype, device=start.device).unsqueeze(1)
    codes = (1 - t) * start + t * end  # exact at both ends: (1 - 0) * a + 0 * b == a
    return model.decode(codes).reshape(steps, 28, 28).float().cpu()


def pair_indices(labels: torch.Tensor, pairs=PAIRS) -> list[tuple[int, int]]:
    """(index of the first test image of digit a, of digit b) for each pair whose digits
    are both present, in the order given; the first two images when no pair is."""
    first = {int(d): int((labels == d).nonzero()[0]) for d in labels.unique()}
    found = [(first[a], first[b]) for a, b in pairs if a in first and b in first]
    return found or [(0, min(1, len(labels) - 1))]
