"""The IDX reader and writer against torchvision's own reader, plain and gzip-compressed."""

import gzip
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import mnist as tv_mnist

from pipeline.training.datasets import idx


def write(path: Path, array: np.ndarray) -> None:
    path.write_bytes(b"".join(idx.chunks(array)))


def test_files_written_read_back_through_torchvision(tmp_path: Path) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    write(tmp_path / "images", images)
    write(tmp_path / "labels", labels)
    header = (tmp_path / "images").read_bytes()[:16]
    assert header == bytes.fromhex("00000803000000030000001c0000001c")  # 2051, 3, 28, 28
    assert np.array_equal(tv_mnist.read_image_file(str(tmp_path / "images")).numpy(), images)
    assert tv_mnist.read_label_file(str(tmp_path / "labels")).tolist() == [7, 0, 9]
    assert torch.equal(idx.read(tmp_path / "images"), torch.from_numpy(images))
    assert idx.read(tmp_path / "labels", limit=2).tolist() == [7, 0]


def test_a_split_reads_alike_from_plain_and_compressed_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        write(tmp_path / f"t10k-{kind}-ubyte", array)
        packed = gzip.compress((tmp_path / f"t10k-{kind}-ubyte").read_bytes())
        (tmp_path / f"t10k-{kind}-ubyte.gz").write_bytes(packed)
    plain = idx.read_split(tmp_path, "test", None)
    packed = idx.read_split(tmp_path, "test", 4, suffix=".gz")
    assert plain.images.shape == (5, 1, 28, 28) and plain.images.dtype == torch.uint8
    assert plain.labels.dtype == torch.int64 and plain.labels.tolist() == labels.tolist()
    assert torch.equal(plain.images[:, 0], torch.from_numpy(images))
    assert torch.equal(packed.images, plain.images[:4])
    assert torch.equal(packed.labels, plain.labels[:4])
