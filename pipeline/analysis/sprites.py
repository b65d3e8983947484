"""Digit thumbnails for a web page: many 28x28 images tiled into one uint8 PNG (a sprite
sheet) that the page cuts with CSS background-position. Pure: arrays in, PNG bytes out."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

COLUMNS = 40  # 600 digits: 40 x 15 tiles, 1120 x 420 pixels
TILE = 28


def sprite_sheet(images: np.ndarray, columns: int = COLUMNS) -> bytes:
    """Images (n, 28, 28) in [0, 1] (or uint8) as one grey PNG, row-major: image i at
    column i % columns, row i // columns; the last row is padded with black."""
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    n, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.zeros((rows * columns, h, w), dtype=np.uint8)
    canvas[:n] = images
    sheet = canvas.reshape(rows, columns, h, w).transpose(0, 2, 1, 3).reshape(rows * h, -1)
    buffer = io.BytesIO()
    Image.fromarray(sheet).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
