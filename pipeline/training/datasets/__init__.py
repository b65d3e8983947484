"""Data sources: the dataset parameter resolved once into a Source, and loaded into one
ImageData that the model, the loop, the analysis and the run read. One module a source,
in the manner of torchvision's datasets/; this is the only place that tells them apart."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import ConfigError, DataConfig
from pipeline.training.datasets.base import DataError, ImageData, Log, Source, Split
from pipeline.training.datasets.cifar10 import Cifar10
from pipeline.training.datasets.fashion_mnist import FashionMnist
from pipeline.training.datasets.folder import ImageFolderSource
from pipeline.training.datasets.kmnist import Kmnist
from pipeline.training.datasets.mnist import Mnist

NAMED: dict[str, type] = {
    "mnist": Mnist,
    "fashion-mnist": FashionMnist,
    "kmnist": Kmnist,
    "cifar10": Cifar10,
}
"""The datasets known by name; any other value of the parameter must be a folder."""

__all__ = [
    "NAMED",
    "DataError",
    "ImageData",
    "Source",
    "Split",
    "digest_for",
    "is_folder",
    "load",
    "resolve",
]


def is_folder(dataset: str) -> bool:
    """Whether the dataset parameter names a folder: an existing directory, or any value
    holding a path separator (then a missing folder is refused as such)."""
    return os.path.isdir(dataset) or "/" in dataset or os.sep in dataset


def resolve(cfg: DataConfig) -> Source:
    """The source cfg.dataset names, checked as far as can be without fetching (a folder:
    it exists, holds readable images of one size or image_size, has a test split).
    ConfigError or DataError, each one line, where it cannot be."""
    if cfg.dataset in NAMED:
        if cfg.image_size is not None or cfg.channels is not None:
            raise ConfigError(
                f"image_size and channels apply to a folder of images, not to {cfg.dataset}"
            )
        return NAMED[cfg.dataset]()
    if is_folder(cfg.dataset):
        folder = ImageFolderSource(Path(cfg.dataset), cfg.image_size, cfg.channels, cfg.data_dir)
        if folder.name in NAMED:  # a folder called "mnist" is not MNIST: its runs and model
            folder.name = f"{folder.name}-folder"  # must not mix with the real one's
        return folder
    raise ConfigError(
        f"dataset must be one of {', '.join(NAMED)} or a folder of images (a path), "
        f"not {cfg.dataset!r}"
    )


def load(cfg: DataConfig, log: Log = print) -> ImageData:
    """resolve(cfg), then its data: fetched, verified and the first train/test_limit
    images of each split."""
    return resolve(cfg).load(cfg.data_dir, cfg.train_limit, cfg.test_limit, log)


def digest_for(source: Source, cfg: DataConfig) -> str:
    """The digest that load(cfg) gives, without reading the images: the limits cut each
    split to at most its size."""
    sizes = source.sizes()
    kept = (
        min(limit or size, size)
        for limit, size in ((cfg.train_limit, sizes["train"]), (cfg.test_limit, sizes["test"]))
    )
    return source.digest(*kept)
