"""Fashion-MNIST from Debian's package dataset-fashion-mnist (the real files, installed by
the fashion_dir fixture where missing): verified, read, refused where damaged, and the
install command named where the package is missing."""

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from pipeline.training.datasets import fashion_mnist
from pipeline.training.datasets.base import DataError
from pipeline.training.datasets.fashion_mnist import INSTALL, RAW_FILES, FashionMnist

DIGEST = "2b87bd4f37f6d530"  # of the full splits: a change would orphan finished runs
SMALL = "t10k-labels-idx1-ubyte"


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def offline(*args, **kwargs):
    raise OSError("no route to host (test)")


@pytest.fixture
def no_download(monkeypatch) -> None:
    """torchvision's download fails at once, as on a machine without the internet."""
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)


def test_debian_files_verify_and_load(fashion_dir: Path) -> None:
    raw = fashion_dir.absolute() / "FashionMNIST" / "raw"
    assert {n: md5_of(raw / n) for n in RAW_FILES} == RAW_FILES
    assert {n: (raw / n).stat().st_size for n in RAW_FILES} == fashion_mnist.RAW_SIZES
    data = FashionMnist().load(fashion_dir, log=print)
    assert data.name == "fashion-mnist" and data.source == str(raw) and data.shape == (1, 28, 28)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    for split, n, first_label in ((data.train, 60_000, 9), (data.test, 10_000, 9)):
        assert split.images.shape == (n, 1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.dtype == torch.int64 and split.labels[0] == first_label
        # Balanced: every class holds a tenth of each split.
        assert torch.bincount(split.labels).tolist() == [n // 10] * 10
    assert data.digest == DIGEST == FashionMnist().digest(60_000, 10_000)
    # As torchvision reads the same files.
    test = torchvision.datasets.FashionMNIST(fashion_dir, train=False)
    assert torch.equal(data.test.images[:, 0], test.data)
    assert torch.equal(data.test.labels, test.targets)


def test_limits_change_the_digest_only(fashion_dir: Path) -> None:
    small = FashionMnist().load(fashion_dir, 100, 50, log=print)
    assert len(small.train) == 100 and len(small.test) == 50
    assert small.digest == FashionMnist().digest(100, 50) != DIGEST
    assert FashionMnist().load(fashion_dir, 70_000, log=print).digest == DIGEST


def test_an_empty_data_dir_is_filled_from_the_package(fashion_dir, tmp_path, no_download):
    logs: list[str] = []
    FashionMnist().ensure(tmp_path, log=logs.append)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert {n: md5_of(raw / n) for n in os.listdir(raw)} == RAW_FILES  # nothing else left
    assert os.listdir(tmp_path / "FashionMNIST") == ["raw"]
    assert any("Debian package dataset-fashion-mnist" in line for line in logs)


def test_a_corrupt_copy_is_moved_aside_and_copied_again(fashion_dir, tmp_path, no_download):
    raw = shutil.copytree(fashion_dir / "FashionMNIST" / "raw", tmp_path / "FashionMNIST" / "raw")
    damaged = bytearray((raw / SMALL).read_bytes())
    damaged[50] ^= 0xFF
    (raw / SMALL).write_bytes(damaged)
    logs: list[str] = []
    FashionMnist().ensure(tmp_path, log=logs.append)
    assert md5_of(raw / SMALL) == RAW_FILES[SMALL]
    assert md5_of(raw / f"{SMALL}.corrupt") == hashlib.md5(damaged).hexdigest()
    assert any("moved aside" in line and SMALL in line for line in logs)


def test_without_the_package_the_error_names_the_command(tmp_path, monkeypatch, no_download):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "not-installed")
    with pytest.raises(DataError) as error:
        FashionMnist().load(tmp_path / "data", log=print)
    message = str(error.value)
    assert "\n" not in message and INSTALL in message
    assert INSTALL == "apt-get update && apt-get install -y dataset-fashion-mnist"
    assert "no route to host" in message and "not installed" in message
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert f"Fashion-MNIST: {', '.join(RAW_FILES)} missing in {raw}." in message
    assert os.listdir(raw) == []


def test_a_wrong_file_in_the_package_is_not_installed(tmp_path, monkeypatch, no_download):
    package = tmp_path / "package"
    package.mkdir()
    for name in RAW_FILES:  # the right length, the wrong bytes
        (package / f"{name}.gz").write_bytes(gzip.compress(bytes(fashion_mnist.RAW_SIZES[name])))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", package)
    with pytest.raises(DataError) as error:
        FashionMnist().ensure(tmp_path / "data", log=print)
    first = "train-images-idx3-ubyte"  # the first tried stops the copy
    assert f"expected md5 {RAW_FILES[first]}; not installed" in str(error.value)
    assert "--reinstall" in str(error.value)
    assert os.listdir(tmp_path / "data" / "FashionMNIST" / "raw") == []
