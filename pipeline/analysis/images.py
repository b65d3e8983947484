"""Reconstruction images as plain uint8 arrays (no plotting library needed per epoch).

Images arrive as (n, C, H, W) with C = 1 (grey) or 3 (RGB), or as (n, H, W) (grey); a
picture comes out as (H', W') for grey images and (H', W', 3) for colour ones, the layout
PIL and matplotlib read."""

from __future__ import annotations

import numpy as np
import torch

GAP = 2  # pixels between tiles
SCALE = 3  # nearest-neighbour upscaling, so 28-pixel images are readable in the UI
SAMPLES = 10  # images in a reconstruction grid's row


def sample_indices(labels: torch.Tensor, count: int = SAMPLES) -> list[int]:
    """The first test image of each of the first `count` classes, in class order, then
    (with fewer classes, or none) the first images not yet picked: the same images in
    every run, whatever the model."""
    present = labels.unique().tolist()[:count]
    picks = [int((labels == c).nonzero()[0]) for c in present]
    taken = set(picks)
    rest = [i for i in range(min(len(labels), 2 * count)) if i not in taken]
    return picks + rest[: count - len(picks)]


def channels_last(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) or (n, H, W) images as (n, H, W) for grey, (n, H, W, 3) for colour."""
    if images.ndim == 3:
        return images
    if images.shape[1] == 1:
        return images[:, 0]
    return images.transpose(0, 2, 3, 1)


def reconstruction_grid(rows: list[np.ndarray]) -> np.ndarray:
    """Tile image rows (each (n, C, H, W) or (n, H, W), values in [0, 1]) into one uint8
    picture: the first row is usually the originals, the following ones reconstructions."""
    rows = [channels_last(np.asarray(r)) for r in rows]
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    colour = rows[0].shape[3:]
    canvas = np.ones(((h + GAP) * len(rows) + GAP, (w + GAP) * n + GAP, *colour), np.float32)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = GAP + i * (h + GAP), GAP + j * (w + GAP)
            canvas[y : y + h, x : x + w] = np.clip(tile, 0.0, 1.0)
    canvas = canvas.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    return (canvas * 255).round().astype(np.uint8)
