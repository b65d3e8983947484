"""The IDX format of MNIST, Fashion-MNIST and KMNIST: a big-endian header (a 4-byte magic
whose third byte is the type, 0x08 for unsigned bytes, and whose last byte is the number of
dimensions, then each dimension's size) followed by the data. Read directly, as
torchvision.datasets.MNIST reads it, without importing torchvision (a second per process)."""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.training.datasets.base import Split

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
"""Unsigned bytes in 3 dimensions (images) and in 1 (labels)."""
CHUNK = 1 << 20
PREFIXES = {"train": "train", "test": "t10k"}
"""The files' name for each split, in MNIST and the datasets that copy its layout."""


def read(path: Path, limit: int | None = None) -> torch.Tensor:
    """An IDX file of unsigned bytes (gzip-compressed where its name ends in .gz) as a
    uint8 tensor, its first `limit` entries (None: all)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = min(limit or shape[0], shape[0])
    size = count * math.prod(shape[1:])
    body = bytearray(data[4 + 4 * ndim : 4 + 4 * ndim + size])
    return torch.frombuffer(body, dtype=torch.uint8).reshape(count, *shape[1:])


def read_split(raw_dir: Path, split: str, limit: int | None, suffix: str = "") -> Split:
    """A split's ("train" or "test") first `limit` images, (n, 1, H, W), and labels from
    the standard pair of files, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` for
    the test split (then `suffix`)."""
    prefix = PREFIXES[split]
    images = read(raw_dir / f"{prefix}-images-idx3-ubyte{suffix}", limit)
    labels = read(raw_dir / f"{prefix}-labels-idx1-ubyte{suffix}", limit)
    return Split(images=images.unsqueeze(1), labels=labels.long())


def chunks(array: np.ndarray) -> Iterator[bytes]:
    """An IDX file as bytes: the header of uint8 images (n, H, W) or labels (n,), then the
    data, in chunks."""
    if array.ndim == 3:
        yield struct.pack(">IIII", IMAGES_MAGIC, *array.shape)
    else:
        yield struct.pack(">II", LABELS_MAGIC, len(array))
    data = np.ascontiguousarray(array, dtype=np.uint8).reshape(-1)
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK].tobytes()
