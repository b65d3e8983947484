import numpy as np
import torch

from pipeline.analysis.images import GAP, SCALE, reconstruction_grid, sample_indices


def test_sample_indices_pick_the_first_of_each_class_in_order():
    labels = torch.tensor([7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5, 9, 7, 3, 8])
    assert sample_indices(labels) == [3, 2, 1, 18, 4, 8, 11, 0, 19, 7]


def test_sample_indices_fill_up_without_enough_classes():
    assert sample_indices(torch.zeros(30, dtype=torch.long)) == list(range(10))  # no classes
    labels = torch.tensor([1, 1, 0, 1, 1, 0, 1])
    assert sample_indices(labels) == [2, 0, 1, 3, 4, 5, 6]  # class 0, class 1, then the rest


def test_grid_places_rows_and_tiles():
    originals = np.zeros((10, 1, 28, 28), dtype=np.float32)
    recons = np.ones((10, 1, 28, 28), dtype=np.float32)
    grid = reconstruction_grid([originals, recons])
    assert grid.dtype == np.uint8
    assert grid.shape == ((2 * (28 + GAP) + GAP) * SCALE, (10 * (28 + GAP) + GAP) * SCALE)
    top = GAP * SCALE
    assert grid[top : top + 28 * SCALE, top : top + 28 * SCALE].max() == 0  # first original
    second_row = (GAP + 28 + GAP) * SCALE
    assert grid[second_row : second_row + 28 * SCALE, top : top + 28 * SCALE].min() == 255


def test_rgb_grid_is_in_colour():
    red = np.zeros((4, 3, 32, 32), dtype=np.float32)
    red[:, 0] = 1.0
    grid = reconstruction_grid([red, np.ones((4, 3, 32, 32), dtype=np.float32)])
    assert grid.shape == ((2 * (32 + GAP) + GAP) * SCALE, (4 * (32 + GAP) + GAP) * SCALE, 3)
    top = GAP * SCALE
    tile = grid[top : top + 32 * SCALE, top : top + 32 * SCALE]
    assert (tile == [255, 0, 0]).all()  # red stays red: not grey
    assert not (grid[..., 0] == grid[..., 1]).all()
