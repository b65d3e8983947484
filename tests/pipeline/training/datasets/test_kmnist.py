"""KMNIST's reader on small files the test writes in the real format (gzip-compressed
IDX, torchvision's layout), and what it says where the download fails."""

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pipeline.training.datasets import idx
from pipeline.training.datasets.base import DataError, checksum_digest
from pipeline.training.datasets.kmnist import RAW_FILES, Kmnist

SIZES = {"train": 5, "test": 3}


def offline(*args, **kwargs):
    raise OSError("no route to host (test)")


@pytest.fixture(autouse=True)
def no_download(monkeypatch) -> None:
    """torchvision's download fails at once, as on a machine without the internet."""
    monkeypatch.setattr(torchvision.datasets, "KMNIST", offline)


@pytest.fixture
def written(tmp_path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Small KMNIST files in tmp_path/KMNIST/raw: (their arrays by file name, their md5s)."""
    raw = tmp_path / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays, md5s = {}, {}
    for split, prefix in idx.PREFIXES.items():
        n = SIZES[split]
        arrays[f"{prefix}-images-idx3-ubyte.gz"] = rng.integers(0, 256, (n, 28, 28), np.uint8)
        arrays[f"{prefix}-labels-idx1-ubyte.gz"] = rng.integers(0, 10, n, np.uint8)
    for name, array in arrays.items():
        packed = gzip.compress(b"".join(idx.chunks(array)))
        (raw / name).write_bytes(packed)
        md5s[name] = hashlib.md5(packed).hexdigest()
    assert set(md5s) == set(RAW_FILES)  # the official files' names
    return arrays, md5s


def test_reader_on_files_in_the_real_format(tmp_path, written) -> None:
    arrays, md5s = written
    data = Kmnist(checksums=md5s).load(tmp_path, log=print)
    assert data.name == "kmnist" and data.shape == (1, 28, 28) and len(data.classes) == 10
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = (getattr(data, split).images, getattr(data, split).labels)
        assert images.shape == (SIZES[split], 1, 28, 28) and images.dtype == torch.uint8
        assert np.array_equal(images[:, 0].numpy(), arrays[f"{prefix}-images-idx3-ubyte.gz"])
        assert labels.dtype == torch.int64
        assert labels.tolist() == arrays[f"{prefix}-labels-idx1-ubyte.gz"].tolist()
    assert data.digest == checksum_digest(md5s, 5, 3) != Kmnist().digest(5, 3)
    limited = Kmnist(checksums=md5s).load(tmp_path, 2, 1, log=print)
    assert torch.equal(limited.train.images, data.train.images[:2]) and len(limited.test) == 1


def test_files_that_are_not_the_official_ones_are_refused(tmp_path, written) -> None:
    with pytest.raises(DataError) as error:
        Kmnist().load(tmp_path, log=print)
    message = str(error.value)
    assert "\n" not in message and "failed its checksum" in message and "delete" in message
    raw = tmp_path / "KMNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(f"{n}.corrupt" for n in RAW_FILES)


def test_the_download_failing_says_which_files_to_put_where(tmp_path) -> None:
    with pytest.raises(DataError) as error:
        Kmnist().ensure(tmp_path, log=print)
    message = str(error.value)
    raw = tmp_path.absolute() / "KMNIST" / "raw"
    assert "\n" not in message and "no route to host" in message
    assert f"KMNIST: {', '.join(RAW_FILES)} missing in {raw}." in message
    assert "place the official files there" in message
    assert os.listdir(raw) == [] and os.listdir(tmp_path / "KMNIST") == ["raw"]
