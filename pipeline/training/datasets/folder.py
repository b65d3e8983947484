"""A folder of the user's PNG and JPEG images as a dataset (`-P dataset=./my-images`).

Constructing the source lists the folder and reads every image's header (folder_scan.py:
the layout, labels and split rule); every refusal comes then, except a file whose pixels
are corrupt behind a good header, which `ensure` names when it decodes: a sweep should call
`ensure` before it starts any run. `ensure` decodes every image once into
data_dir/folders/<name>-<content digest>.pt (written atomically); later loads read that
file. Given a data_dir, the source remembers each file's hash and header there
(folder_scan.file_facts), so that a later run only stats the files. The digest covers
each file's bytes, path, label and split, the image shape and how many images of each
split are kept.

Decoding: PIL's convert to "L" (greyscale, ITU-R 601-2 luma) or "RGB" (alpha dropped;
16-bit greyscale scaled to 8 bits first), then, where image_size is given and differs,
a resize to image_size x image_size with BILINEAR (Pillow's filters widen when shrinking,
so it is antialiased, as torchvision's Resize(antialias=True)); the aspect ratio is not
kept. Serial: on a shared 2-core host a process pool decoded 10,000 28x28 PNGs no faster
(0.92 s against 0.95 s) and a thread pool slower (PIL holds the GIL on such small images).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

from pipeline.config import MAX_IMAGE_SIZE, DataConfig, one_line
from pipeline.training.datasets.base import (
    DataError,
    ImageData,
    Log,
    Split,
    checksum_digest,
)
from pipeline.training.datasets.folder_scan import (
    SPLITS,
    Facts,
    ImageFile,
    file_facts,
    index_path,
    list_folder,
    paused_gc,
)

MIN_IMAGE_SIZE = 8  # a side, as DataConfig's image_size: the conv model's smallest input
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
"""PIL modes without colour: a folder of only these is 1 channel by default."""
WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
"""16-bit greyscale, which PIL's convert("L") would clip rather than scale."""
RESAMPLE = Image.Resampling.BILINEAR
FORMAT = "folder-1"
"""The decoding's version, in every digest: change it when decoding changes."""
MEMORY_FACTOR = 6
"""A folder is refused when its decoded uint8 images take over 1/6 of the available
memory: a training process holds them and a float32 copy (4x) of each split it uses."""
PROGRESS_EVERY = 10_000
CACHE_FOLDER = "folders"


def model_name(folder_name: str) -> str:
    """A folder's name made a registered-model name's prefix: "My Images!" -> "my-images"."""
    return re.sub(r"[^a-z0-9-]+", "-", folder_name.lower()).strip("-") or "folder"


def available_memory() -> int:
    return psutil.virtual_memory().available


class ImageFolderSource:
    """The images in `root`, resized to image_size (None: their own size, all the same) as
    `channels` channels (None: 1 where every image is greyscale, else 3)."""

    def __init__(
        self,
        root: Path,
        image_size: int | None,
        channels: int | None,
        data_dir: str | os.PathLike | None = None,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        DataConfig(dataset=str(self.root), image_size=image_size, channels=channels)
        index = index_path(data_dir, self.root) if data_dir is not None else None
        with paused_gc():
            self.listing = list_folder(self.root)
            self.facts = file_facts(self.root, (f.path for f in self.listing.files), index)
        self.name = model_name(self.root.name)
        self.classes = self.listing.classes
        self.shape = image_shape(self.root, self.facts, image_size, channels)
        check_memory(self.root, len(self.listing.files), self.shape)
        self.content = content_digest(self.shape, self.classes, self.listing.files, self.facts)

    def sizes(self) -> Mapping[str, int]:
        return {s: sum(f.split == s for f in self.listing.files) for s in SPLITS}

    def digest(self, n_train: int, n_test: int) -> str:
        return checksum_digest({"folder": self.content}, n_train, n_test)

    def cache_path(self, data_dir: str | os.PathLike) -> Path:
        return Path(data_dir).absolute() / CACHE_FOLDER / f"{self.name}-{self.content[:16]}.pt"

    def ensure(self, data_dir: str | os.PathLike, log: Log = print) -> None:
        """Decode every image into the cache file, unless it is there; DataError naming an
        image that cannot be decoded."""
        path = self.cache_path(data_dir)
        if path.is_file():
            log(f"{self.name}: decoded images of {self.root} cached in {path}")
            return
        c, h, w = self.shape
        n = len(self.listing.files)
        log(
            f"{self.name}: decoding {n:,} images of {self.root} to {c}x{h}x{w} "
            f"(split: {self.listing.rule})"
        )
        images = decode_all(self.root, self.listing.files, self.shape, log)
        labels = torch.tensor([f.label for f in self.listing.files], dtype=torch.int64)
        saved = {}
        for split in SPLITS:
            chosen = torch.tensor([f.split == split for f in self.listing.files])
            saved |= {f"{split}_images": images[chosen], f"{split}_labels": labels[chosen]}
        write_atomically(path, saved)
        log(f"{self.name}: decoded {n:,} images into {path}")

    def load(
        self,
        data_dir: str | os.PathLike,
        train_limit: int | None,
        test_limit: int | None,
        log: Log = print,
    ) -> ImageData:
        """ensure, then the first train_limit and test_limit images of each split."""
        DataConfig(data_dir=str(data_dir), train_limit=train_limit, test_limit=test_limit)
        self.ensure(data_dir, log)
        saved = torch.load(self.cache_path(data_dir), mmap=True, weights_only=True)
        splits = {}
        for split, limit in zip(SPLITS, (train_limit, test_limit), strict=True):
            n = min(limit or len(saved[f"{split}_labels"]), len(saved[f"{split}_labels"]))
            splits[split] = Split(saved[f"{split}_images"][:n], saved[f"{split}_labels"][:n])
        digest = self.digest(len(splits["train"]), len(splits["test"]))
        return ImageData(
            self.name, splits["train"], splits["test"], digest, str(self.root), self.classes
        )


def image_shape(
    root: Path, facts: Mapping[str, Facts], image_size: int | None, channels: int | None
) -> tuple[int, int, int]:
    """C, H, W of the decoded images, or DataError where the images' own sizes differ or
    are outside what the model takes."""
    c = channels or (1 if all(f.mode in GREY_MODES for f in facts.values()) else 3)
    if image_size is not None:
        return c, image_size, image_size
    by_size = {(f.width, f.height): path for path, f in facts.items()}
    if len(by_size) > 1:
        (a, (w1, h1)), (b, (w2, h2)) = [(p, s) for s, p in sorted(by_size.items())[:2]]
        raise DataError(
            f"dataset folder {root}: images differ in size ({a} is {w1}x{h1}, {b} is "
            f"{w2}x{h2}); pass image_size to resize them all"
        )
    ((w, h),) = by_size
    if min(w, h) < MIN_IMAGE_SIZE or max(w, h) > MAX_IMAGE_SIZE:
        raise DataError(
            f"dataset folder {root}: its images are {w}x{h}, outside the {MIN_IMAGE_SIZE} to "
            f"{MAX_IMAGE_SIZE} pixels a side the model takes; pass image_size to resize them"
        )
    return c, h, w


def check_memory(root: Path, n: int, shape: tuple[int, int, int]) -> None:
    """DataError where the decoded images would not fit in memory, before decoding any."""
    need, available = n * math.prod(shape), available_memory()
    limit = available // MEMORY_FACTOR
    if need > limit:
        c, h, w = shape
        raise DataError(
            f"dataset folder {root}: {n:,} images of {c}x{h}x{w} decode to about "
            f"{need / 1e9:.2f} GB, over the {limit / 1e9:.2f} GB limit (1/{MEMORY_FACTOR} "
            f"of the {available / 1e9:.2f} GB available: training also holds them as "
            "float32); pass a smaller image_size or use a part of the folder"
        )


def content_digest(
    shape: tuple[int, int, int],
    classes: tuple[str, ...],
    files: tuple[ImageFile, ...],
    facts: Mapping[str, Facts],
) -> str:
    """sha256 of the decoding's version, the shape, the class names and each image's
    split, label, path and bytes' sha256, in the listing's order (fields end in NUL, the
    one character no path holds)."""
    digest = hashlib.sha256(json.dumps([FORMAT, RESAMPLE.name, shape, classes]).encode())
    rows = "".join(f"{f.split}\0{f.label}\0{f.path}\0{facts[f.path].sha256}\0" for f in files)
    digest.update(rows.encode())
    return digest.hexdigest()


def decode_all(
    root: Path, files: tuple[ImageFile, ...], shape: tuple[int, int, int], log: Log
) -> torch.Tensor:
    """Every file decoded into one uint8 (n, C, H, W) tensor, a log line every
    PROGRESS_EVERY images."""
    images = np.empty((len(files), *shape), dtype=np.uint8)
    for i, f in enumerate(files):
        images[i] = decode(root / f.path, shape)
        if (i + 1) % PROGRESS_EVERY == 0:
            log(f"  decoded {i + 1:,} of {len(files):,} images")
    return torch.from_numpy(images)


def decode(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image as uint8 (C, H, W), or DataError naming the file."""
    c, h, w = shape
    try:
        with Image.open(path) as image:
            converted = _eight_bits(image).convert("L" if c == 1 else "RGB")
            if converted.size != (w, h):
                converted = converted.resize((w, h), RESAMPLE)
            pixels = np.asarray(converted, dtype=np.uint8)
    except Exception as exc:  # PIL raises several kinds (OSError, SyntaxError, ...)
        raise DataError(f"image {path} cannot be decoded ({one_line(exc)})") from exc
    return pixels[None] if c == 1 else pixels.transpose(2, 0, 1)


def _eight_bits(image: Image.Image) -> Image.Image:
    if image.mode not in WIDE_GREY:
        return image
    wide = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(wide / 257), 0, 255).astype(np.uint8))


def write_atomically(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """torch.save to a temporary file beside path, then rename: never a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise DataError(f"cannot write {path} ({exc}); choose a writable data dir") from exc
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a shared data dir's users
        with os.fdopen(fd, "wb") as f:
            torch.save(tensors, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
