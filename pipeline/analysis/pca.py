"""Analytic PCA floors: the best per-pixel test MSE any linear code of size k can reach.

Fitted in float64 on the training images, scored on the test images (pixels in [0, 1]).
"Uncentered" projects onto the top-k eigenvectors of X^T X: the optimum of a bias-free
linear autoencoder such as our linear baseline. "Centered" subtracts the training mean
first (ordinary PCA). Index k of either list is the floor for k components, k = 0..784;
k = 0 is the all-zero output (uncentered) and the mean training image (centered).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.training.tensors import PIXEL_MAX

CACHE_PREFIX = "pca_floors-"


@dataclass(frozen=True)
class PcaFloors:
    uncentered: list[float]
    centered: list[float]
    digest: str
    """Digest of the data the floors were computed on (pipeline.training.data.mnist_digest)."""

    def floor(self, k: int, centered: bool = False) -> float:
        """Floor for k components; k beyond the pixel count reconstructs exactly (0)."""
        values = self.centered if centered else self.uncentered
        return values[min(k, len(values) - 1)]


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64) / PIXEL_MAX


def residual_mse(train: np.ndarray, test: np.ndarray) -> list[float]:
    """Per-pixel test MSE after projecting onto the top-k eigenvectors of train^T train,
    for every k from 0 to the number of pixels (float64 rows of pixels)."""
    _, eigenvectors = np.linalg.eigh(train.T @ train)
    basis = eigenvectors[:, ::-1]  # descending eigenvalue order
    captured = np.cumsum(((test @ basis) ** 2).sum(axis=0))  # energy of the top-k projections
    total = float((test**2).sum())
    residual = np.maximum(total - np.concatenate([[0.0], captured]), 0.0)
    return (residual / test.size).tolist()


def compute_floors(train_images: np.ndarray, test_images: np.ndarray, digest: str) -> PcaFloors:
    """Floors for uint8 image arrays (n, 28, 28), uncentered and centered.

    One BLAS thread: once torch has run, its idle OpenMP threads compete with OpenBLAS's
    for the cores, and the eigendecomposition's many small calls ran 5x slower (12 s
    against 2.5 s on 2 cores)."""
    train, test = _flat(train_images), _flat(test_images)
    mean = train.mean(axis=0)
    with threadpool_limits(1, user_api="blas"):
        return PcaFloors(
            uncentered=residual_mse(train, test),
            centered=residual_mse(train - mean, test - mean),
            digest=digest,
        )


def cache_path(data_dir: str | os.PathLike, digest: str) -> Path:
    return Path(data_dir) / "MNIST" / f"{CACHE_PREFIX}{digest}.json"


def read_cached(data_dir: str | os.PathLike, digest: str) -> PcaFloors | None:
    """The cached floors for this data digest, or None if absent or unreadable."""
    try:
        floors = PcaFloors(**json.loads(cache_path(data_dir, digest).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return floors if floors.digest == digest else None


def write_cache(data_dir: str | os.PathLike, floors: PcaFloors) -> Path:
    """Write atomically (temporary file, then rename): a reader never sees half a file."""
    path = cache_path(data_dir, floors.digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(floors), f)
    os.replace(tmp, path)
    return path
