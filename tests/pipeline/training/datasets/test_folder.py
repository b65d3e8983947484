"""A folder of images as a dataset, on small real PNG and JPEG files written by each test:
its layouts, labels and split rule, decoding, digest, cache, and every refusal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ConfigError, DataConfig
from pipeline.training.datasets import DataError, folder, folder_scan, resolve
from pipeline.training.datasets.folder import ImageFolderSource, model_name
from pipeline.training.datasets.folder_scan import TEST_BUCKETS, path_key, split_of


def write_image(path: Path, size=(16, 16), mode="RGB", seed=0) -> Path:
    """Random pixels in the given PIL mode, saved in the format its extension names."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": (3,), "L": ()}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], *channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def make_classes(root: Path, per_class: int = 14) -> Path:
    """cat/ holds RGB PNGs, dog/ greyscale JPEGs (some .JPEG), beside files that are no images."""
    for i in range(per_class):
        write_image(root / "cat" / f"{i:02d}.png", seed=i)
        write_image(root / "dog" / f"{i:02d}.{'JPEG' if i % 2 else 'jpg'}", mode="L", seed=100 + i)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"skipped")
    return root


def pil_pixels(path: Path, mode: str) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert(mode))
    return pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)


def split_files(source: ImageFolderSource, split: str) -> list[folder_scan.ImageFile]:
    return [f for f in source.listing.files if f.split == split]


def test_class_folders_are_sorted_labels_and_every_image_is_pil_s_own_decoding(tmp_path):
    root = make_classes(tmp_path / "pets")
    source = ImageFolderSource(root, None, None)
    data = source.load(tmp_path / "data", None, None, log=lambda _: None)
    assert source.classes == data.classes == ("cat", "dog") and data.name == "pets"
    assert data.shape == (3, 16, 16) and data.source == str(root.resolve())
    assert len(data.train) + len(data.test) == 28 and len(data.test) > 0
    for split in ("train", "test"):
        images, labels = getattr(data, split).images, getattr(data, split).labels
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        for f, image, label in zip(split_files(source, split), images, labels, strict=True):
            assert label == ("cat", "dog").index(f.path.split("/")[0])
            assert np.array_equal(image.numpy(), pil_pixels(root / f.path, "RGB")), f.path


def test_a_flat_folder_has_no_classes_and_labels_every_image_0(tmp_path):
    for i in range(20):
        write_image(tmp_path / "flat" / f"{i}.png", seed=i)
    data = ImageFolderSource(tmp_path / "flat", None, None).load(tmp_path / "d", None, None)
    assert data.classes == () and not data.labelled
    assert len(data.train) + len(data.test) == 20
    assert data.train.labels.eq(0).all() and data.test.labels.eq(0).all()


def test_train_and_test_subfolders_are_the_split(tmp_path):
    for i in range(5):
        write_image(tmp_path / "f" / "train" / "a" / f"{i}.png", seed=i)
        write_image(tmp_path / "f" / "train" / "b" / f"{i}.png", seed=10 + i)
    write_image(tmp_path / "f" / "test" / "b" / "only.png", seed=99)
    source = ImageFolderSource(tmp_path / "f", None, None)
    assert source.sizes() == {"train": 10, "test": 1} and source.classes == ("a", "b")
    data = source.load(tmp_path / "d", None, None)
    assert data.test.labels.tolist() == [1]
    assert np.array_equal(
        data.test.images[0].numpy(), pil_pixels(source.root / "test/b/only.png", "RGB")
    )


def test_the_split_rule_is_pinned_independent_of_listing_order_and_holds_out_a_seventh(tmp_path):
    names = [f"{i:02d}.png" for i in range(30)]
    for order, root in ((names, tmp_path / "one"), (names[::-1], tmp_path / "two")):
        for name in order:  # created in opposite orders
            write_image(root / name, size=(8, 8), seed=int(name[:2]))
    one, two = (ImageFolderSource(tmp_path / n, None, None).listing for n in ("one", "two"))
    assert one.files == two.files
    assert [f.path for f in one.files if f.split == "test"] == [
        "12.png",
        "17.png",
        "20.png",
        "19.png",
        "03.png",
    ]
    assert all(f.split == split_of(path_key(f.path)) for f in one.files)
    keys = [path_key(f.path) for f in one.files]
    assert keys == sorted(keys)  # the listing's order: mixed, the same everywhere
    share = sum(split_of(path_key(f"c/{i}.png")) == "test" for i in range(70_000)) / 70_000
    assert share == pytest.approx(1 / TEST_BUCKETS, abs=0.005)


def test_image_size_resizes_every_image_bilinear_to_a_square(tmp_path):
    write_image(tmp_path / "f" / "a" / "wide.png", size=(20, 12), seed=1)
    for i in range(12):
        write_image(tmp_path / "f" / "b" / f"{i}.png", size=(16, 16), seed=i)
    source = ImageFolderSource(tmp_path / "f", 8, None)
    data = source.load(tmp_path / "d", None, None)
    assert source.shape == data.shape == (3, 8, 8)
    (wide,) = [i for i, f in enumerate(split_files(source, "train")) if f.path == "a/wide.png"]
    expected = Image.open(tmp_path / "f/a/wide.png").convert("RGB").resize((8, 8), Image.BILINEAR)
    assert np.array_equal(data.train.images[wide].numpy(), np.asarray(expected).transpose(2, 0, 1))


def test_channels_default_to_1_for_greyscale_folders_and_convert_both_ways(tmp_path):
    for i in range(10):
        write_image(tmp_path / "grey" / f"{i}.jpg", mode="L", seed=i)
    assert ImageFolderSource(tmp_path / "grey", None, None).shape == (1, 16, 16)
    grey3 = ImageFolderSource(tmp_path / "grey", None, 3)
    images = grey3.load(tmp_path / "d", None, None).train.images
    assert (
        images.shape[1] == 3
        and images[:, 0].equal(images[:, 1])
        and images[:, 1].equal(images[:, 2])
    )
    root = make_classes(tmp_path / "mixed")
    assert ImageFolderSource(root, None, None).shape == (3, 16, 16)
    source = ImageFolderSource(root, None, 1)
    data = source.load(tmp_path / "d", None, None)
    first = split_files(source, "train")[0]
    assert np.array_equal(data.train.images[0].numpy(), pil_pixels(root / first.path, "L"))


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits_not_clipped(tmp_path):
    wide = (np.array([[0, 257 * 100, 65535, 257 * 7]] * 8, dtype=np.uint16)).repeat(2, axis=1)
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.png", "h.png"):
        (tmp_path / "f").mkdir(exist_ok=True)
        Image.fromarray(wide).save(tmp_path / "f" / name)
    data = ImageFolderSource(tmp_path / "f", None, None).load(tmp_path / "d", None, None)
    assert data.shape == (1, 8, 8) and data.train.images[0, 0, 0].tolist() == [
        0,
        0,
        100,
        100,
        255,
        255,
        7,
        7,
    ]


def test_the_digest_follows_bytes_shape_and_counts_not_mtime(tmp_path):
    root = make_classes(tmp_path / "f", per_class=6)
    digest = ImageFolderSource(root, None, None).digest(8, 4)
    os.utime(root / "cat/00.png", ns=(10**18, 10**18))
    assert ImageFolderSource(root, None, None).digest(8, 4) == digest
    assert ImageFolderSource(root, None, None).digest(8, 3) != digest
    assert ImageFolderSource(root, 8, None).digest(8, 4) != digest
    assert ImageFolderSource(root, None, 1).digest(8, 4) != digest
    assert ImageFolderSource(root, 16, 3).digest(8, 4) == digest  # the same images
    write_image(root / "cat/00.png", seed=1234)  # same size, other bytes
    assert ImageFolderSource(root, None, None).digest(8, 4) != digest


def test_the_second_load_reads_the_cache_and_the_index_not_the_images(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_scan, "RACY_NS", 0)  # trust files written a moment ago
    root, data_dir = make_classes(tmp_path / "f"), tmp_path / "data"
    source = ImageFolderSource(root, None, None, data_dir)
    first = source.load(data_dir, 10, None)
    assert source.cache_path(data_dir).is_file() and len(first.train) == 10

    def refuse(*_):
        raise AssertionError("read again")

    monkeypatch.setattr(folder, "decode", refuse)
    monkeypatch.setattr(folder_scan, "examine", refuse)
    again = ImageFolderSource(root, None, None, data_dir)
    whole = again.load(data_dir, None, None)
    assert whole.train.images[:10].equal(first.train.images) and whole.test.images.equal(
        first.test.images
    )
    assert len(whole.train) == source.sizes()["train"] and whole.digest != first.digest
    monkeypatch.undo()
    write_image(root / "cat/03.png", seed=999)  # other bytes: hashed, decoded again
    changed = ImageFolderSource(root, None, None, data_dir)
    assert changed.content != source.content and not changed.cache_path(data_dir).exists()
    (index,) = (data_dir / "folders").glob("index-*.json")
    index.write_text("{not json")  # a broken index costs a rescan, nothing else
    assert ImageFolderSource(root, None, None, data_dir).content == changed.content


def test_resolve_makes_a_path_a_folder_source(tmp_path):
    root = make_classes(tmp_path / "My Pets!", per_class=4)
    source = resolve(DataConfig(dataset=str(root), data_dir=str(tmp_path / "d"), image_size=8))
    assert (
        isinstance(source, ImageFolderSource)
        and source.name == "my-pets"
        and source.shape == (3, 8, 8)
    )


@pytest.mark.parametrize(
    ("folder_name", "name"),
    [
        ("My Images!", "my-images"),
        ("zoo_2024.v2", "zoo-2024-v2"),
        ("__", "folder"),
        ("a--b", "a--b"),
    ],
)
def test_a_folder_s_name_becomes_a_model_name(folder_name, name):
    assert model_name(folder_name) == name


def refusal(error: type, root: Path, image_size=None, channels=None) -> str:
    """The one-line message of the error constructing the source raises."""
    with pytest.raises(error) as caught:
        ImageFolderSource(root, image_size, channels)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_missing_folder_a_file_an_empty_folder_and_one_without_images_are_refused(tmp_path):
    assert f"{tmp_path / 'nothing'} does not exist" in refusal(DataError, tmp_path / "nothing")
    (tmp_path / "file.png").write_bytes(b"x")
    assert "is a file, not a folder" in refusal(DataError, tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    assert f"{tmp_path / 'empty'} is empty" in refusal(DataError, tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hello")
    assert "holds no PNG or JPEG image" in refusal(DataError, tmp_path / "text")


def test_a_class_folder_without_images_and_images_beside_class_folders_are_refused(tmp_path):
    root = make_classes(tmp_path / "f", per_class=4)
    (root / "empty").mkdir()
    assert f"class folder {root / 'empty'} holds no PNG" in refusal(DataError, root)
    (root / "empty").rmdir()
    write_image(root / "stray.png")
    assert f"image {root / 'stray.png'} lies beside class folders" in refusal(DataError, root)


def test_a_split_without_test_images_is_refused(tmp_path):
    write_image(tmp_path / "half" / "train" / "a.png")
    assert "has train/ but no test/" in refusal(DataError, tmp_path / "half")
    (tmp_path / "half" / "test").mkdir()
    assert f"folder {tmp_path / 'half' / 'test'} holds no PNG" in refusal(
        DataError, tmp_path / "half"
    )
    names = [n for n in (f"{i}.png" for i in range(20)) if split_of(path_key(n)) == "train"][:3]
    for name in names:
        write_image(tmp_path / "few" / name)
    message = refusal(DataError, tmp_path / "few")
    assert (
        "none of its 3 images falls in the test split" in message and "train/ and test/" in message
    )


def test_image_size_and_channels_out_of_range_are_refused_before_the_folder_is_read(tmp_path):
    for size in (4, 7, 513, 100_000):
        assert "image_size must be" in refusal(ConfigError, tmp_path / "absent", image_size=size)
    for channels in (2, 4):
        assert "channels must be" in refusal(ConfigError, tmp_path / "absent", channels=channels)


def test_mixed_sizes_without_image_size_and_images_too_small_are_refused(tmp_path):
    write_image(tmp_path / "f" / "train" / "a.png", size=(16, 16))
    write_image(tmp_path / "f" / "test" / "b.png", size=(20, 12))
    message = refusal(DataError, tmp_path / "f")
    assert "images differ in size" in message and "pass image_size" in message
    assert "train/a.png is 16x16" in message and "test/b.png is 20x12" in message
    assert ImageFolderSource(tmp_path / "f", 16, None).shape == (3, 16, 16)
    write_image(tmp_path / "tiny" / "train" / "a.png", size=(4, 4))
    write_image(tmp_path / "tiny" / "test" / "a.png", size=(4, 4))
    assert "its images are 4x4, outside the 8 to 512" in refusal(DataError, tmp_path / "tiny")


def test_a_corrupt_header_is_named_at_once_and_corrupt_pixels_when_decoding(tmp_path):
    root = make_classes(tmp_path / "f", per_class=8)
    (root / "cat" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert f"image {root / 'cat' / 'bad.png'} is corrupt" in refusal(DataError, root)
    good = (root / "cat" / "00.png").read_bytes()
    (root / "cat" / "bad.png").write_bytes(good[:60] + bytes(len(good) - 60))  # header intact
    source = ImageFolderSource(root, None, None)
    with pytest.raises(DataError, match=f"image {root / 'cat' / 'bad.png'} cannot be decoded"):
        source.load(tmp_path / "d", None, None)
    assert not source.cache_path(tmp_path / "d").exists()
    assert not (tmp_path / "d").exists()  # nothing written


def test_a_folder_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    root = make_classes(tmp_path / "f", per_class=4)
    monkeypatch.setattr(folder, "available_memory", lambda: 6_000)
    message = refusal(DataError, root)
    assert "8 images of 3x16x16 decode to about 0.00 GB, over the 0.00 GB limit" in message
    monkeypatch.setattr(folder, "available_memory", lambda: 6 * 8 * 3 * 16 * 16)
    assert ImageFolderSource(root, None, None).shape == (3, 16, 16)
