"""CIFAR-10's reader on small pickled batches the test writes in the real format (the
python version's data_batch_1..5, test_batch and batches.meta), and what it says where the
download fails."""

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pipeline.training.datasets.base import DataError, checksum_digest
from pipeline.training.datasets.cifar10 import ARCHIVE, BATCHES, RAW_FILES, Cifar10

ROWS = {"data_batch_1": 2, "data_batch_2": 3, "test_batch": 4}  # 1 in each other batch


def offline(*args, **kwargs):
    raise OSError("no route to host (test)")


@pytest.fixture(autouse=True)
def no_download(monkeypatch) -> None:
    """torchvision's download fails at once, as on a machine without the internet."""
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)


def write_batches(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Small batches as the official ones are pickled: (rows and labels by split)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    rows, labels = {}, {}
    for split, names in BATCHES.items():
        parts = []
        for name in names:
            data = rng.integers(0, 256, (ROWS.get(name, 1), 3072), np.uint8)
            batch = {"batch_label": name, "labels": rng.integers(0, 10, len(data)).tolist()}
            batch |= {"data": data, "filenames": [f"{i}.png" for i in range(len(data))]}
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
            parts.append(batch)
        rows[split] = np.concatenate([b["data"] for b in parts])
        labels[split] = [label for b in parts for label in b["labels"]]
    meta = {"label_names": list(Cifar10.classes), "num_cases_per_batch": 10000, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return rows, labels


def test_reader_on_batches_in_the_real_format(tmp_path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    rows, labels = write_batches(folder)
    md5s = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in RAW_FILES}
    data = Cifar10(checksums=md5s).load(tmp_path, log=print)
    assert data.name == "cifar10" and data.shape == (3, 32, 32) and data.classes[-1] == "truck"
    assert (len(data.train), len(data.test)) == (8, 4)
    for split in ("train", "test"):
        images, row = getattr(data, split).images, rows[split]
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
        assert getattr(data, split).labels.tolist() == labels[split]
        # Each row: 1024 red values, then green, then blue, each row-major 32x32.
        assert images[0, 0, 0, 1] == row[0, 1] and images[0, 1, 0, 0] == row[0, 1024]
        assert images[1, 2, 31, 31] == row[1, 3071] and images[0, 0, 1, 0] == row[0, 32]
        assert np.array_equal(images.numpy(), row.reshape(-1, 3, 32, 32))
    assert data.digest == checksum_digest(md5s, 8, 4) != Cifar10().digest(8, 4)
    limited = Cifar10(checksums=md5s).load(tmp_path, 3, 4, log=print)  # across two batches
    assert torch.equal(limited.train.images, data.train.images[:3])
    assert limited.train.labels.tolist() == labels["train"][:3]


def test_batches_that_are_not_the_official_ones_are_refused(tmp_path) -> None:
    write_batches(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataError, match="failed its checksum"):
        Cifar10().load(tmp_path, log=print)
    moved = sorted(os.listdir(tmp_path / "cifar-10-batches-py"))
    assert moved == sorted(f"{n}.corrupt" for n in RAW_FILES)  # never unpickled


def test_the_download_failing_says_which_files_to_put_where(tmp_path) -> None:
    with pytest.raises(DataError) as error:
        Cifar10().ensure(tmp_path, log=print)
    message = str(error.value)
    folder = tmp_path.absolute() / "cifar-10-batches-py"
    assert "\n" not in message and "no route to host" in message
    assert f"CIFAR-10: {', '.join(RAW_FILES)} missing in {folder}." in message
    assert "place the official files there" in message
    assert f"extract {ARCHIVE}" in message and os.listdir(folder) == []
    assert os.listdir(tmp_path) == ["cifar-10-batches-py"]  # the download's temp root removed
    assert Cifar10().sizes() == {"train": 50_000, "test": 10_000}
