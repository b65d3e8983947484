"""Folder-load benchmark: the first and the second load of a folder of images as a dataset,
in one run. The first lists the folder, hashes and reads the header of every file, decodes
every image and writes the decoded cache; the second, what every later run does, finds the
files unchanged in the index and reads the cache. Each load is what a run does: resolving
the source (ImageFolderSource) and loading it, every pixel read; imports are not
counted. The issue's target for the second load of 60,000 images is 2 s.

    .venv/bin/python -m benchmarks.folder_load                 # 60,000 28x28 PNGs in 10 classes
    .venv/bin/python -m benchmarks.folder_load --images 200 --dir /tmp/small   # smoke size

The images (smooth random blobs, about as compressible as MNIST's digits) are written
once under --dir and reused while their count matches; the data dir beside them is
emptied first, so that the first load always decodes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.training.datasets.folder import ImageFolderSource
from tracking.host import cpu_model, instruction_set

SIDE, CLASSES = 28, 10
TARGET_S = 2.0


def blob(rng: np.random.Generator) -> np.ndarray:
    """A 28x28 greyscale image: three Gaussian blobs on black."""
    y, x = np.mgrid[:SIDE, :SIDE]
    image = np.zeros((SIDE, SIDE))
    for cy, cx, r in rng.uniform((6, 6, 2), (22, 22, 5), size=(3, 3)):
        image += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    return (255 * np.clip(image, 0, 1)).astype(np.uint8)


def ensure_images(folder: Path, n: int) -> str:
    """n PNGs in CLASSES class folders at folder, written into a temporary folder and
    renamed, so that an interrupted run leaves none half written; what was done."""
    if folder.is_dir():
        return "reused"
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    rng = np.random.default_rng(0)
    for c in range(CLASSES):
        (tmp / f"class-{c}").mkdir()
    for i in range(n):
        Image.fromarray(blob(rng)).save(tmp / f"class-{i % CLASSES}" / f"{i:06d}.png")
    os.replace(tmp, folder)
    return f"written in {time.perf_counter() - started:.1f} s"


def timed_load(folder: Path, data_dir: Path) -> tuple[float, float, int]:
    """Seconds to resolve the source and to load it, and the images loaded."""
    started = time.perf_counter()
    source = ImageFolderSource(folder, None, None, data_dir)
    resolved = time.perf_counter()
    data = source.load(data_dir, None, None, log=lambda line: print(f"    {line}"))
    for split in (data.train, data.test):  # every byte read: the cache is memory-mapped
        split.images.clone()
    return resolved - started, time.perf_counter() - resolved, len(data.train) + len(data.test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60_000)
    default_dir = Path(tempfile.gettempdir()) / "latent-tradeoff-folder-bench"
    parser.add_argument("--dir", type=Path, default=default_dir)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    folder, data_dir = args.dir / f"images-{args.images}", args.dir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    print(f"host: {cpu_model()}, {instruction_set()}, {os.cpu_count()} CPUs")
    done = ensure_images(folder, args.images)
    print(f"folder: {folder}, {args.images:,} {SIDE}x{SIDE} PNGs in {CLASSES} classes ({done})")
    for which in ("first", "second"):
        print(f"{which} load:")
        resolve_s, load_s, n = timed_load(folder, data_dir)
        total = resolve_s + load_s
        print(
            f"  {which} load: {total:.2f} s for {n:,} images (resolve {resolve_s:.2f} s, "
            f"load {load_s:.2f} s)"
        )
    verdict = "met" if total <= TARGET_S else "NOT met"
    print(f"second load {total:.2f} s, target for 60,000 images <= {TARGET_S:g} s: {verdict}")


if __name__ == "__main__":
    main()
