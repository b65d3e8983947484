"""KMNIST (Kuzushiji-MNIST): cursive Japanese characters in MNIST's format, the four
official gzip-compressed IDX files in data_dir/KMNIST/raw (torchvision's layout), checked
against the MD5s torchvision checks and read without decompressing them to disk.

Acquisition: verified files already there; else torchvision's own download. No offline
copy exists on the package indexes: where the download fails, the error says which files
to place where."""

from __future__ import annotations

from pathlib import Path

from pipeline.training.datasets.base import Split
from pipeline.training.datasets.idx import read_split
from pipeline.training.datasets.verified import NamedSource

RAW_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
}
URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"


class Kmnist(NamedSource):
    """Clanuwat et al.'s Kuzushiji-MNIST: 1x28x28 greyscale, one hiragana a class."""

    name = "kmnist"
    title = "KMNIST"
    shape = (1, 28, 28)
    classes = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    folder = "KMNIST/raw"
    torchvision_class = "KMNIST"
    official = RAW_FILES
    split_sizes = {"train": 60_000, "test": 10_000}

    def read(self, raw_dir: Path, split: str, limit: int | None) -> Split:
        return read_split(raw_dir, split, limit, suffix=".gz")

    def remedy(self, raw_dir: Path) -> str:
        return f"connect this machine to the internet (torchvision downloads from {URL})"
