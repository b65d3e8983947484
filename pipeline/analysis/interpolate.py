"""Walks through a latent space: decode the straight line between two codes. It shows
what a model's code space holds between two test images. Pure: tensors in, tensors out."""

from __future__ import annotations

import torch
from torch import nn

STEPS = 10
PAIRS = ((1, 7), (3, 8), (4, 9))
"""Pairs of classes walked between (MNIST's digits that look alike): the first test image
of each. Data with fewer classes, or none, walks between its first test images."""


@torch.inference_mode()
def interpolate(
    model: nn.Module, start: torch.Tensor, end: torch.Tensor, steps: int = STEPS
) -> torch.Tensor:
    """The decoded images (steps, C, H, W) in [0, 1] along the straight line from code
    `start` to code `end` (each (d,)): step 0 decodes start, the last step decodes end."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, not {steps}")
    model.eval()
    t = torch.linspace(0.0, 1.0, steps, dtype=start.dtype, device=start.device).unsqueeze(1)
    codes = (1 - t) * start + t * end  # exact at both ends: (1 - 0) * a + 0 * b == a
    return model.decode(codes).float().cpu()


def pair_indices(labels: torch.Tensor, pairs=PAIRS) -> list[tuple[int, int]]:
    """(index of the first test image of class a, of class b) for each pair whose classes
    are both present, in the order given; else pairs of the first test images, one walk a
    pair given."""
    first = {int(c): int((labels == c).nonzero()[0]) for c in labels.unique()}
    found = [(first[a], first[b]) for a, b in pairs if a in first and b in first]
    if found:
        return found
    ends = [(2 * i, 2 * i + 1) for i in range(len(pairs)) if 2 * i + 1 < len(labels)]
    return ends or [(0, min(1, len(labels) - 1))]
