"""Reconstruction images as plain uint8 arrays (no plotting library needed per epoch)."""

from __future__ import annotations

import numpy as np
import torch

GAP = 2  # pixels between tiles
SCALE = 3  # nearest-neighbour upscaling, so 28-pixel digits are readable in the UI


def sample_indices(labels: torch.Tensor, per_digit: int = 1) -> list[int]:
    """The first `per_digit` test images of each digit 0-9, in digit order: the same
    digits in every run, whatever the model."""
    picks: list[int] = []
    for digit in range(10):
        picks += (labels == digit).nonzero().flatten()[:per_digit].tolist()
    return picks or list(range(min(10, len(labels))))


def reconstruction_grid(rows: list[np.ndarray]) -> np.ndarray:
    """Tile image rows (each (n, 28, 28), values in [0, 1]) into one uint8 picture: the
    first row is usually the originals, the following ones reconstructions."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:]
    canvas = np.ones(((h + GAP) * len(rows) + GAP, (w + GAP) * n + GAP), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = GAP + i * (h + GAP), GAP + j * (w + GAP)
            canvas[y : y + h, x : x + w] = np.clip(tile, 0.0, 1.0)
    canvas = canvas.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    return (canvas * 255).round().astype(np.uint8)
