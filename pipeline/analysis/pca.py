"""Analytic PCA floors: the best per-pixel test MSE any linear code of size k can reach.

Fitted in float64 on the training images, scored on the test images (pixels in [0, 1]).
"Uncentered" projects onto the top-k eigenvectors of X^T X: the optimum of a bias-free
linear autoencoder such as our linear baseline. "Centered" subtracts the training mean
first (ordinary PCA). Index k of either list is the floor for k components, k = 0..D with
D = C*H*W pixels per image; k = 0 is the all-zero output (uncentered) and the mean training
image (centered).

Memory: the training images are read into the D x D Gram matrix in chunks, so the float64
copy of a split is never whole (CIFAR-10: a 3072 x 3072 Gram of 75 MB, and the 10,000 test
images in float64, 245 MB, rather than 1.5 GB for the 50,000 training images). Above
MAX_FLOOR_PIXELS the eigendecomposition (O(D^3)) and its Gram (8 D^2 bytes) cost too much:
only the k = 0 floors are computed, the others are NaN (the report shows n/a).
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

CACHE_DIR = "pca_floors"  # under data_dir, one file per data digest
CACHE_PREFIX = "pca_floors-"
MAX_FLOOR_PIXELS = 3 * 64 * 64
"""The largest image (C*H*W) whose floors are computed for every k: a 12,288 x 12,288
Gram matrix is 1.2 GB, and its eigendecomposition some minutes on one core."""
CHUNK = 10_000  # training images converted to float64 at a time


@dataclass(frozen=True)
class PcaFloors:
    uncentered: list[float]
    centered: list[float]
    digest: str
    """Digest of the data the floors were computed on (ImageData.digest)."""

    @property
    def pixels(self) -> int:
        """D = C*H*W of the images: the last k of the floors."""
        return len(self.uncentered) - 1

    def floor(self, k: int, centered: bool = False) -> float:
        """Floor for k components; k beyond the pixel count reconstructs exactly (0)."""
        values = self.centered if centered else self.uncentered
        return values[min(k, len(values) - 1)]


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float64) / PIXEL_MAX


def gram_residual_mse(gram: np.ndarray, test: np.ndarray) -> list[float]:
    """Per-pixel test MSE after projecting onto the top-k eigenvectors of the Gram matrix
    train^T train, for every k from 0 to the number of pixels (float64 rows of pixels)."""
    _, eigenvectors = np.linalg.eigh(gram)
    basis = eigenvectors[:, ::-1]  # descending eigenvalue order
    captured = np.cumsum(((test @ basis) ** 2).sum(axis=0))  # energy of the top-k projections
    total = float((test**2).sum())
    residual = np.maximum(total - np.concatenate([[0.0], captured]), 0.0)
    return (residual / test.size).tolist()


def residual_mse(train: np.ndarray, test: np.ndarray) -> list[float]:
    """gram_residual_mse of float64 training rows."""
    return gram_residual_mse(train.T @ train, test)


def _chunks(images: np.ndarray):
    """uint8 images (n, ...) as float64 rows, CHUNK images at a time."""
    for start in range(0, len(images), CHUNK):
        yield _flat(images[start : start + CHUNK])


def _mean(images: np.ndarray) -> np.ndarray:
    return sum(rows.sum(axis=0) for rows in _chunks(images)) / len(images)


def _gram(images: np.ndarray) -> np.ndarray:
    """train^T train of uint8 images (n, ...), without their whole float64 copy."""
    return sum(rows.T @ rows for rows in _chunks(images))


def _zero_floors(test_images: np.ndarray, mean: np.ndarray, digest: str) -> PcaFloors:
    """Images too large for the eigendecomposition: k = 0 only, NaN beyond."""
    size = test_images.size
    uncentered = sum(float((rows**2).sum()) for rows in _chunks(test_images)) / size
    centered = sum(float(((rows - mean) ** 2).sum()) for rows in _chunks(test_images)) / size
    rest = [float("nan")] * len(mean)
    return PcaFloors([uncentered, *rest], [centered, *rest], digest)


def compute_floors(train_images: np.ndarray, test_images: np.ndarray, digest: str) -> PcaFloors:
    """Floors for uint8 image arrays (n, C, H, W) (or (n, H, W)), uncentered and centered.
    The centered Gram is the uncentered one less n * mean mean^T: no centered copy.

    One BLAS thread: once torch has run, its idle OpenMP threads compete with OpenBLAS's
    for the cores, and the eigendecomposition's many small calls ran 5x slower (12 s
    against 2.5 s on 2 cores)."""
    with threadpool_limits(1, user_api="blas"):
        mean = _mean(train_images)
        if len(mean) > MAX_FLOOR_PIXELS:
            return _zero_floors(test_images, mean, digest)
        test, gram = _flat(test_images), _gram(train_images)
        centered_gram = gram - len(train_images) * np.outer(mean, mean)
        return PcaFloors(
            uncentered=gram_residual_mse(gram, test),
            centered=gram_residual_mse(centered_gram, test - mean),
            digest=digest,
        )


def cache_path(data_dir: str | os.PathLike, digest: str) -> Path:
    """One file per data digest, whatever the dataset."""
    return Path(data_dir) / CACHE_DIR / f"{CACHE_PREFIX}{digest}.json"


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
