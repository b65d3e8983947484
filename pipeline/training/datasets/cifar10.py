"""CIFAR-10: Krizhevsky's 32x32 colour photographs, the official python version's pickled
batches in data_dir/cifar-10-batches-py (torchvision's layout), each checked against the
MD5 torchvision checks.

Acquisition: verified files already there; else torchvision's own download (the archive
cifar-10-python.tar.gz, checked, then extracted). No offline copy exists on the package
indexes: where the download fails, the error says which files to place where."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from pipeline.training.datasets.base import Split
from pipeline.training.datasets.verified import NamedSource

BATCHES = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
}
RAW_FILES: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
ARCHIVE, ARCHIVE_MD5 = "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class Cifar10(NamedSource):
    """Krizhevsky's CIFAR-10: 3x32x32 RGB, 10 classes of objects."""

    name = "cifar10"
    title = "CIFAR-10"
    shape = (3, 32, 32)
    classes = (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    folder = "cifar-10-batches-py"
    torchvision_class = "CIFAR10"
    official = RAW_FILES
    split_sizes = {"train": 50_000, "test": 10_000}

    def read(self, raw_dir: Path, split: str, limit: int | None) -> Split:
        return read_batches([raw_dir / name for name in BATCHES[split]], limit)

    def remedy(self, raw_dir: Path) -> str:
        return (
            f"connect this machine to the internet, or extract {ARCHIVE} (md5 {ARCHIVE_MD5}, "
            f"from {URL}) into {raw_dir.parent}"
        )


def read_batches(paths: list[Path], limit: int | None) -> Split:
    """The first `limit` rows (None: all) of CIFAR's pickled batches, in order: each a
    dict whose "data" holds uint8 rows of 3072 values (1024 red, then green, then blue,
    each row-major 32x32) and whose "labels" holds their labels. Unpickling runs code:
    call it on verified files only."""
    images, labels = [], []
    for path in paths:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8))
        labels.extend(batch["labels"])
        if limit is not None and len(labels) >= limit:
            break
    rows = np.concatenate(images)
    if limit is not None and limit < len(rows):
        rows = rows[:limit].copy()  # not a view that keeps every row in memory
    return Split(
        images=torch.from_numpy(rows.reshape(-1, 3, 32, 32)),
        labels=torch.tensor(labels[:limit], dtype=torch.int64),
    )
