"""Image thumbnails for a web page: many images tiled into one uint8 PNG (a sprite sheet)
that the page cuts with CSS background-position. Grey images give a grey PNG, RGB ones a
colour PNG. Pure: arrays in, PNG bytes out."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.analysis.images import channels_last

COLUMNS = 40  # 600 images: 40 x 15 tiles, 1120 x 420 pixels at 28 x 28


def sprite_sheet(images: np.ndarray, columns: int = COLUMNS) -> bytes:
    """Images (n, C, H, W) or (n, H, W) in [0, 1] (or uint8) as one PNG, row-major: image
    i at column i % columns, row i // columns; the last row is padded with black."""
    images = channels_last(np.asarray(images))
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    n, h, w = images.shape[:3]
    colour = images.shape[3:]
    rows = -(-n // columns)
    canvas = np.zeros((rows * columns, h, w, *colour), dtype=np.uint8)
    canvas[:n] = images
    sheet = canvas.reshape(rows, columns, h, w, *colour).swapaxes(1, 2)
    buffer = io.BytesIO()
    Image.fromarray(sheet.reshape(rows * h, columns * w, *colour)).save(
        buffer, format="PNG", optimize=True
    )
    return buffer.getvalue()
