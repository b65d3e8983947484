"""A folder of images, listed before anything is decoded: which files are its images, the
label and split of each, and each file's facts (a hash of its bytes, its size in pixels and
its colour mode) read from its header, remembered in a small index between runs.

The layout is torchvision's ImageFolder convention, mirrored here rather than imported:
importing torchvision costs a process 1-3 s, and ImageFolder knows neither a flat folder
nor a split. Sorted class-folder names are the labels 0..k-1, every image below a class
folder (links followed) is of that class, a class folder without an image is refused. A
flat folder (images, no subfolder) has no classes. Names starting with "." are skipped.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from pipeline.config import one_line
from pipeline.training.datasets.base import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
"""The images read, any case: PNG and JPEG (torchvision's IMG_EXTENSIONS holds more)."""
SPLITS = ("train", "test")
TEST_BUCKETS = 7
"""Without train/ and test/ subfolders, about 1 image in 7 is held out for test: MNIST's
own share (10,000 of 70,000)."""
SPLIT_SEED = "latent-tradeoff-split-0"
"""The split rule's seed: an image is a test image when sha256(SPLIT_SEED + "/" + its path
relative to the folder) read as a big-endian number is divisible by TEST_BUCKETS. It
depends on the path alone, so it is the same on every machine and in any listing order,
an image keeps its split when others are added, and editing an image does not move it."""
RULE = f"1 image in {TEST_BUCKETS} held out for test by a seeded hash of its path"
INDEX_COLUMNS = ("path", "size", "mtime_ns", "ctime_ns", "sha256", "width", "height", "mode")
"""The index: a JSON object of these columns, one row a file, and the folder's "root"."""
RACY_NS = 2_000_000_000
"""The index trusts a file's facts while its size, mtime and ctime are unchanged, but only
for files last changed this long before they were read (as git does for its index): a
file rewritten within one clock tick of being read is hashed again next time."""


class ImageFile(NamedTuple):  # a tuple, not a dataclass: 60,000 are made each run
    path: str
    """Relative to the folder, "/"-separated: "train/cat/001.png"."""
    split: str
    label: int


@dataclass(frozen=True)
class Listing:
    root: Path
    classes: tuple[str, ...]
    files: tuple[ImageFile, ...]
    """Each split's images in a fixed pseudo-random order (by path_key), so that a split's
    first N images mix the classes."""
    rule: str


class Facts(NamedTuple):
    sha256: str
    width: int
    height: int
    mode: str


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The garbage collector paused while a scan makes and keeps a few objects a file: its
    automatic passes would walk them all again and again (40% of a 60,000-file scan)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def path_key(path: str) -> int:
    digest = hashlib.sha256(f"{SPLIT_SEED}/{path}".encode()).digest()
    return int.from_bytes(digest, "big")


def split_of(key: int) -> str:
    """The split the rule gives an image of this path_key."""
    return "test" if key % TEST_BUCKETS == 0 else "train"


def list_folder(root: Path) -> Listing:
    """The folder's images with their labels and splits, or DataError saying what is wrong."""
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset {root} is a file, not a folder of images")
    if not any(not e.name.startswith(".") for e in os.scandir(root)):
        raise DataError(f"dataset folder {root} is empty")
    present = [s for s in SPLITS if (root / s).is_dir()]
    if len(present) == 1:
        (other,) = set(SPLITS) - set(present)
        raise DataError(
            f"dataset folder {root} has {present[0]}/ but no {other}/: give it both, or "
            f"neither ({RULE})"
        )
    if present:
        return _split_folders(root)
    classes, found = _level(root, root)
    labels = {name: i for i, name in enumerate(classes)}
    keys = {p: path_key(p) for p, _ in found}
    files = [ImageFile(p, split_of(keys[p]), labels.get(c, 0)) for p, c in found]
    for split in SPLITS:
        if not any(f.split == split for f in files):
            raise DataError(
                f"dataset folder {root}: none of its {len(files)} images falls in the "
                f"{split} split ({RULE}); add images, or give it train/ and test/ subfolders"
            )
    return Listing(root, tuple(classes), _ordered(files, keys), RULE)


def _split_folders(root: Path) -> Listing:
    """train/ and test/, each a level of its own; the labels are the classes of both."""
    levels = {split: _level(root / split, root) for split in SPLITS}
    if len({bool(classes) for classes, _ in levels.values()}) > 1:
        raise DataError(
            f"dataset folder {root}: one of train/ and test/ has class folders and the other "
            "none; give both the same class folders"
        )
    classes = sorted({name for names, _ in levels.values() for name in names})
    labels = {name: i for i, name in enumerate(classes)}
    files = [
        ImageFile(p, split, labels.get(c, 0))
        for split, (_, found) in levels.items()
        for p, c in found
    ]
    keys = {f.path: path_key(f.path) for f in files}
    return Listing(root, tuple(classes), _ordered(files, keys), "the folder's train/ and test/")


def _level(folder: Path, root: Path) -> tuple[list[str], list[tuple[str, str | None]]]:
    """A folder's class folders (sorted) and its images as (path, class) pairs: the images
    below each class folder, or, with none, the images directly inside (class None)."""
    entries = sorted(
        (e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name
    )
    classes = [e.name for e in entries if e.is_dir()]
    loose = [e.name for e in entries if e.is_file() and is_image(e.name)]
    if not classes:
        if not loose:
            raise DataError(f"folder {folder} holds no PNG or JPEG image (.png, .jpg, .jpeg)")
        prefix = _relative(folder, root)
        return [], [(prefix + name, None) for name in loose]
    if loose:
        raise DataError(
            f"image {folder / loose[0]} lies beside class folders ({', '.join(classes)}); "
            "move it into one of them"
        )
    found = []
    for name in classes:
        images = _images_below(folder / name, root)
        if not images:
            raise DataError(f"class folder {folder / name} holds no PNG or JPEG image")
        found += [(path, name) for path in images]
    return classes, found


def _images_below(folder: Path, root: Path) -> list[str]:
    """The paths, relative to root, of every image in folder and below (links followed)."""
    found = []
    for here, subfolders, names in os.walk(folder, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        prefix = _relative(Path(here), root)
        found += [prefix + name for name in sorted(names) if is_image(name)]
    return found


def _relative(folder: Path, root: Path) -> str:
    """A folder's path relative to root as the prefix of its files' paths: "" or "cat/"."""
    relative = folder.relative_to(root).as_posix()
    return "" if relative == "." else relative + "/"


def _ordered(files: Iterable[ImageFile], keys: dict[str, int]) -> tuple[ImageFile, ...]:
    return tuple(sorted(files, key=lambda f: (keys[f.path], f.path)))


def file_facts(root: Path, paths: Iterable[str], index: Path | None) -> dict[str, Facts]:
    """Each file's facts by path: from the index where the file is unchanged since, else
    read from the file (its bytes hashed, its header parsed); the index then updated."""
    known = _read_index(index, root)
    started, base = time.time_ns(), f"{root}{os.sep}"
    facts, stamps, changed = {}, {}, False
    for path in paths:
        stat = os.stat(base + path)  # strings, not pathlib: 3x faster on 60,000 files
        stamp = stamps[path] = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        entry = known.get(path)
        if entry is not None and entry[:3] == stamp:
            facts[path] = Facts(*entry[3:])
        else:
            facts[path] = examine(root / path)
            changed = True
    if index is not None and changed:
        settled = started - RACY_NS
        rows = [(p, *s, *facts[p]) for p, s in stamps.items() if max(s[1:]) < settled]
        _write_index(index, root, rows)
    return facts


def examine(path: Path) -> Facts:
    """A file's hash and header (PIL reads no pixel data), or DataError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"image {path} cannot be read ({one_line(exc)})") from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, mode = *image.size, image.mode
    except Exception as exc:  # PIL raises several kinds (OSError, SyntaxError, ...)
        raise DataError(f"image {path} is corrupt or not an image ({one_line(exc)})") from exc
    return Facts(hashlib.sha256(data).hexdigest(), width, height, mode)


def index_path(data_dir: str | os.PathLike, root: Path) -> Path:
    """Where the facts of the folder at root are remembered: one small JSON file."""
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return Path(data_dir).absolute() / "folders" / f"index-{key}.json"


def _read_index(index: Path | None, root: Path) -> dict[str, tuple]:
    """The index's rows (INDEX_COLUMNS after the path) by path; none where it is missing,
    unreadable or another folder's."""
    if index is None:
        return {}
    try:
        saved = json.loads(index.read_text())
        if saved["root"] != str(root):
            return {}
        paths, *rest = (saved[name] for name in INDEX_COLUMNS)
        return dict(zip(paths, zip(*rest, strict=True), strict=True))
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_index(index: Path, root: Path, rows: list[tuple]) -> None:
    """Written atomically, by columns (parsed 3x faster than a row a file); a data dir
    that cannot hold it only costs the next run a rescan."""
    columns = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in INDEX_COLUMNS]
    with contextlib.suppress(OSError):
        index.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{index.name}.", dir=index.parent)
        try:
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a shared data dir's users
            with os.fdopen(fd, "w") as f:
                json.dump({"root": str(root), **dict(zip(INDEX_COLUMNS, columns, strict=True))}, f)
            os.replace(tmp, index)
        except OSError:
            os.unlink(tmp)
            raise
