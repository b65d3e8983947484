"""Fashion-MNIST: Zalando's clothing images in MNIST's format, the four official IDX files
in data_dir/FashionMNIST/raw (torchvision's layout).

Acquisition order: verified files already there; else Debian's package
dataset-fashion-mnist, which ships the official files gzip-compressed (offline, so no
network timeout comes first); else torchvision's own download. Debian rewrote the gzip
headers, so the .gz files' MD5s are not upstream's: the decompressed files are checked.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

from pipeline.training.datasets.base import DataError, Log, Split
from pipeline.training.datasets.idx import CHUNK, read_split
from pipeline.training.datasets.verified import Fetch, NamedSource, write_verified

RAW_FILES: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
"""The decompressed files' MD5s (torchvision checks upstream's .gz MD5s as it downloads)."""
RAW_SIZES: dict[str, int] = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package puts NAME.gz (read at call time: tests point it elsewhere)."""
DEBIAN_PACKAGE = "dataset-fashion-mnist"
INSTALL = f"apt-get update && apt-get install -y {DEBIAN_PACKAGE}"


class FashionMnist(NamedSource):
    """Xiao, Rasul and Vollgraf's Fashion-MNIST: 1x28x28 greyscale, 10 kinds of clothing."""

    name = "fashion-mnist"
    title = "Fashion-MNIST"
    shape = (1, 28, 28)
    classes = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    folder = "FashionMNIST/raw"
    torchvision_class = "FashionMNIST"
    official = RAW_FILES
    split_sizes = {"train": 60_000, "test": 10_000}

    def read(self, raw_dir: Path, split: str, limit: int | None) -> Split:
        return read_split(raw_dir, split, limit)

    def fetchers(self) -> list[tuple[str, Fetch]]:
        return [(f"Debian package {DEBIAN_PACKAGE}", _copy_debian), *super().fetchers()]

    def remedy(self, raw_dir: Path) -> str:
        if not DEBIAN_DIR.is_dir():
            return f"install Debian's copy as root: {INSTALL}; or connect to the internet"
        return f"reinstall Debian's copy as root (apt-get install --reinstall -y {DEBIAN_PACKAGE})"


def _copy_debian(raw_dir: Path, names: Iterable[str], log: Log) -> None:
    """Decompress Debian's copy of each file into raw_dir, verified as it is written."""
    for name in names:
        packed = DEBIAN_DIR / f"{name}.gz"
        if not packed.is_file():
            raise DataError(f"{packed} is missing: the package {DEBIAN_PACKAGE} is not installed")
        log(f"Fashion-MNIST: decompressing {packed}")
        with gzip.open(packed) as f:
            chunks = iter(lambda: f.read(CHUNK), b"")
            write_verified(raw_dir / name, chunks, RAW_FILES[name], RAW_SIZES[name])
