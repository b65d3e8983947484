"""What the named datasets share: their official files in one folder of data_dir, each
checked against its official MD5 before first use; missing ones fetched from a list of
sources in order, each written atomically (a temporary file, then a rename) so that an
interrupted fetch never leaves a file that passes for good; a corrupt one moved aside to
NAME.corrupt, never trusted again."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import ClassVar

from pipeline.config import DataConfig, one_line
from pipeline.training.datasets.base import (
    DataError,
    ImageData,
    Log,
    Split,
    checksum_digest,
    file_md5,
)

Fetch = Callable[[Path, list[str], Log], None]
"""A source of missing files: (their folder, their names, log); raises where it cannot."""


class NamedSource:
    """A dataset known by name, read from its official files in data_dir/`folder`.
    A subclass states the class attributes and `read`, and where the files come from
    (`fetchers`, `remedy`). `checksums` replaces the official MD5s: only tests pass it,
    to read small files written in the real format."""

    name: ClassVar[str]
    """The dataset parameter's value."""
    title: ClassVar[str]
    """How logs and errors call it."""
    shape: ClassVar[tuple[int, int, int]]
    classes: ClassVar[tuple[str, ...]]
    folder: ClassVar[str]
    """Where its files go under data_dir: torchvision's own layout."""
    torchvision_class: ClassVar[str]
    """The torchvision.datasets class whose download fetches the files."""
    official: ClassVar[Mapping[str, str]]
    """Each file's official MD5, by file name."""
    split_sizes: ClassVar[Mapping[str, int]]

    def __init__(self, checksums: Mapping[str, str] | None = None) -> None:
        self.checksums = dict(self.official if checksums is None else checksums)

    def raw_dir(self, data_dir: str | os.PathLike) -> Path:
        return Path(data_dir).absolute() / self.folder

    def sizes(self) -> dict[str, int]:
        return dict(self.split_sizes)

    def digest(self, n_train: int, n_test: int) -> str:
        return checksum_digest(self.checksums, n_train, n_test)

    def read(self, raw_dir: Path, split: str, limit: int | None) -> Split:
        """The first `limit` images (None: all) of a split ("train" or "test") from the
        verified files."""
        raise NotImplementedError

    def fetchers(self) -> list[tuple[str, Fetch]]:
        """The sources of missing files, in the order they are tried."""
        return [("torchvision download", self.download)]

    def remedy(self, raw_dir: Path) -> str:
        """How the user gets the files where every source failed, before "or place ..."."""
        return "connect this machine to the internet (torchvision downloads them)"

    def ensure(self, data_dir: str | os.PathLike, log: Log = print) -> None:
        """Make sure every file is in raw_dir(data_dir) and verified, fetching the missing
        ones; DataError saying what to do where every source fails."""
        raw_dir = self.raw_dir(data_dir)
        missing = self.unverified(raw_dir)
        if not missing:
            log(f"{self.title}: verified {len(self.checksums)} files in {raw_dir}")
            return
        corrupt = {name: md5 for name, md5 in missing.items() if md5 is not None}
        self.move_aside(raw_dir, corrupt, log)
        try:
            raw_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(
                f"{self.title}: cannot create {raw_dir} ({exc}); choose a writable data dir."
            ) from exc
        errors = []
        for label, fetch in self.fetchers():
            try:
                fetch(raw_dir, list(missing), log)
            except Exception as exc:
                errors.append(f"{label}: {one_line(exc)}")
                log(f"{self.title}: {label} failed ({one_line(exc)})")
            missing = self.unverified(raw_dir)
            if not missing:
                log(f"{self.title}: fetched and verified {len(self.checksums)} files ({label})")
                return
        raise DataError(self.failure(raw_dir, list(missing), corrupt, errors))

    def load(
        self,
        data_dir: str | os.PathLike,
        train_limit: int | None = None,
        test_limit: int | None = None,
        log: Log = print,
    ) -> ImageData:
        """ensure, then both splits, the first `limit` images of each (None, or more than
        the split holds: all); the digest depends on how many are kept."""
        limits = {"train_limit": train_limit, "test_limit": test_limit}
        DataConfig(data_dir=str(data_dir), dataset=self.name, **limits)  # ConfigError
        self.ensure(data_dir, log)
        raw_dir = self.raw_dir(data_dir)
        train = self.read(raw_dir, "train", train_limit)
        test = self.read(raw_dir, "test", test_limit)
        digest = self.digest(len(train), len(test))
        return ImageData(self.name, train, test, digest, str(raw_dir), self.classes)

    def unverified(self, raw_dir: Path) -> dict[str, str | None]:
        """Files that are missing (None) or fail their MD5 (their actual MD5)."""
        actual = {
            n: file_md5(raw_dir / n) if (raw_dir / n).is_file() else None for n in self.checksums
        }
        return {n: md5 for n, md5 in actual.items() if md5 != self.checksums[n]}

    def move_aside(self, raw_dir: Path, corrupt: dict[str, str], log: Log) -> None:
        """Rename each corrupt file to ``<name>.corrupt``, so that it is never trusted."""
        for name, actual in corrupt.items():
            path, expected = raw_dir / name, self.checksums[name]
            try:
                os.replace(path, path.with_name(name + ".corrupt"))
            except FileNotFoundError:  # another process moved it first
                pass
            except OSError as exc:
                raise DataError(
                    f"{self.title} file {path} failed its checksum (expected md5 {expected}, "
                    f"actual md5 {actual}) and cannot be moved aside ({exc}); delete or replace it."
                ) from exc
            log(f"{self.title}: {path} has md5 {actual}, expected {expected}; moved aside")

    def failure(
        self, raw_dir: Path, missing: list[str], corrupt: dict[str, str], errors: list[str]
    ) -> str:
        """The one line that says which files lack, why, and what to do."""
        parts = [
            f"{self.title} file {raw_dir / n} failed its checksum (expected md5 "
            f"{self.checksums[n]}, actual md5 {corrupt[n]}) and was moved aside to {n}.corrupt."
            for n in missing
            if n in corrupt
        ]
        if absent := [n for n in missing if n not in corrupt]:
            parts.append(f"{self.title}: {', '.join(absent)} missing in {raw_dir}.")
        parts.append("Every source failed: " + "; ".join(errors) + ".")
        fix = "delete the .corrupt file(s) once inspected, then " if corrupt else ""
        parts.append(
            f"To fix: {fix}{self.remedy(raw_dir)}, or place the official files there "
            "(their md5s: docs/data.md)."
        )
        return " ".join(parts)

    def download(self, raw_dir: Path, names: Iterable[str], log: Log) -> None:
        """torchvision's download (it checks upstream's checksums) into a temporary root
        beside raw_dir; each file moved in once it matches its MD5."""
        tmp_root = Path(tempfile.mkdtemp(prefix=".torchvision-", dir=raw_dir.parent))
        downloaded = tmp_root / self.folder  # torchvision's layout, as under data_dir
        try:
            log(f"{self.title}: trying torchvision's download")
            import torchvision  # only here: it takes a second to import

            getattr(torchvision.datasets, self.torchvision_class)(
                str(tmp_root), train=True, download=True
            )
            for name in names:
                actual = file_md5(downloaded / name)
                if actual != self.checksums[name]:
                    raise DataError(
                        f"downloaded {name} has md5 {actual}, expected {self.checksums[name]}"
                    )
                os.replace(downloaded / name, raw_dir / name)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)


def write_verified(
    path: Path, chunks: Iterable[bytes], expected_md5: str, size: int | None = None
) -> None:
    """Write chunks to a temporary file beside `path`; rename it to `path` if its MD5
    matches (and its size, where given: more bytes stop the write at once)."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        digest, written = hashlib.md5(), 0
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide shared data from other users
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                written += len(chunk)
                if size is not None and written > size:
                    raise DataError(f"{path.name} holds over {size} bytes; not installed.")
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != expected_md5 or (size is not None and written != size):
            raise DataError(
                f"{path.name} has md5 {digest.hexdigest()} and {written} bytes, expected md5 "
                f"{expected_md5}; not installed."
            )
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
