"""Sprite sheets: every image at its tile, exactly."""

import io

import numpy as np
from PIL import Image

from pipeline.analysis.sprites import sprite_sheet


def test_each_image_lies_at_its_tile():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 1, 28, 28), dtype=np.uint8)
    sheet = np.asarray(Image.open(io.BytesIO(sprite_sheet(images, columns=3))))
    assert sheet.shape == (3 * 28, 3 * 28) and sheet.dtype == np.uint8
    for i, image in enumerate(images):
        row, col = divmod(i, 3)
        np.testing.assert_array_equal(
            sheet[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28], image[0]
        )
    assert not sheet[2 * 28 :, 28:].any()  # the padding is black


def test_unit_floats_become_uint8():
    images = np.stack([np.zeros((28, 28)), np.full((28, 28), 0.5), np.ones((28, 28))])
    sheet = np.asarray(Image.open(io.BytesIO(sprite_sheet(images))))
    assert sheet.shape == (28, 40 * 28)
    assert sheet[0, 0] == 0 and sheet[0, 28] == 128 and sheet[0, 56] == 255


def test_rgb_images_give_a_colour_sheet():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    png = Image.open(io.BytesIO(sprite_sheet(images, columns=2)))
    assert png.mode == "RGB"
    sheet = np.asarray(png)
    assert sheet.shape == (3 * 32, 2 * 32, 3)
    np.testing.assert_array_equal(sheet[32:64, 32:64], images[3].transpose(1, 2, 0))
    assert not sheet[64:, 32:].any()  # the padding is black
