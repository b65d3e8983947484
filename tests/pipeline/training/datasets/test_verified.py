"""What every named dataset's files share: written atomically and verified, or not at all."""

import gzip
import hashlib
import os
import re
from pathlib import Path

import pytest

from pipeline.config import ConfigError, check_writable
from pipeline.training.datasets.base import DataError
from pipeline.training.datasets.verified import write_verified

NAME = "train-labels-idx1-ubyte"
GOOD = b"\x00\x00\x08\x01" + bytes(range(200))
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


def test_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    def chunks():
        yield GOOD[:4]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_verified(tmp_path / NAME, chunks(), GOOD_MD5)
    with pytest.raises(DataError, match="expected md5"):
        write_verified(tmp_path / NAME, iter([b"wrong"]), GOOD_MD5)
    assert os.listdir(tmp_path) == []
    write_verified(tmp_path / NAME, iter([GOOD[:10], GOOD[10:]]), GOOD_MD5, size=len(GOOD))
    assert os.listdir(tmp_path) == [NAME] and (tmp_path / NAME).read_bytes() == GOOD


def test_a_stream_longer_than_its_size_stops_at_once(tmp_path: Path) -> None:
    """A compressed file that decompresses to more than the official size (a wrong file,
    or a bomb) is cut off as soon as it passes the size, and nothing is installed."""
    bomb = gzip.compress(bytes(50_000_000))  # 49 KB that inflate to 50 MB
    read = []

    def chunks():
        with gzip.open(tmp_path / "bomb.gz") as f:
            while block := f.read(1 << 16):
                read.append(len(block))
                yield block

    (tmp_path / "bomb.gz").write_bytes(bomb)
    with pytest.raises(DataError, match=f"over {len(GOOD)} bytes"):
        write_verified(tmp_path / NAME, chunks(), GOOD_MD5, size=len(GOOD))
    assert sum(read) == 1 << 16 and os.listdir(tmp_path) == ["bomb.gz"]


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper")
    assert os.listdir(tmp_path) == []  # created only to test, then removed
    regular = tmp_path / "file"
    regular.write_text("x")
    for bad in (regular, regular / "data"):
        with pytest.raises(ConfigError, match=re.escape(str(bad))):
            check_writable(bad)
    assert os.listdir(tmp_path) == ["file"]
