"""What every data source gives: a dataset resolved once into one object that the model,
the loop, the analysis and the run read (its name, source, digest, image shape and class
names), and the error a source raises when it cannot provide its data."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

Log = Callable[[str], None]


class DataError(RuntimeError):
    """A dataset could not be made available; the message says which file and what to do."""


@dataclass(frozen=True)
class Split:
    """One split: ``images`` uint8 (n, C, H, W), ``labels`` int64 (n,); a dataset without
    classes labels every image 0."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageData:
    """A loaded dataset: both splits, a digest of exactly what they hold, where they came
    from, and the names of its classes by label (empty where it has none)."""

    name: str
    """The dataset parameter's name for it ("mnist", "fashion-mnist"), or a folder's
    name made a valid model name."""
    train: Split
    test: Split
    digest: str
    """16 hex digits of what the splits hold: equal digests, equal data."""
    source: str
    classes: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """C, H, W of every image."""
        return tuple(self.train.images.shape[1:])

    @property
    def labelled(self) -> bool:
        return bool(self.classes)


class Source(Protocol):
    """A dataset before it is read: what the dataset parameter resolved to. Resolving
    checks what can be checked without fetching (a folder exists and holds images);
    `digest` needs no decoding, so that a sweep can find finished runs before loading."""

    name: str
    shape: tuple[int, int, int]
    classes: tuple[str, ...]

    def ensure(self, data_dir: str | os.PathLike, log: Log = print) -> None:
        """Fetch and verify the files (written atomically), or DataError saying what to do."""

    def sizes(self) -> Mapping[str, int]:
        """How many images the "train" and "test" splits hold in all."""

    def digest(self, n_train: int, n_test: int) -> str:
        """The digest of the data `load` gives with this many images of each split."""

    def load(
        self,
        data_dir: str | os.PathLike,
        train_limit: int | None,
        test_limit: int | None,
        log: Log = print,
    ) -> ImageData:
        """ensure, then both splits, the first `limit` images of each (None: all)."""


def checksum_digest(checksums: Mapping[str, str], n_train: int, n_test: int) -> str:
    """A named dataset's digest: its verified files' checksums and how many images of
    each split are used (MNIST's, unchanged since the first runs, so old runs are reused)."""
    text = ";".join(f"{name}={md5}" for name, md5 in sorted(checksums.items()))
    text += f";train={n_train};test={n_test}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
