import numpy as np
import torch

from pipeline.analysis.images import GAP, SCALE, reconstruction_grid, sample_indices


def test_sample_indices_pick_the_first_of_each_digit_in_order():
    labels = torch.tensor([7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5, 9, 7, 3, 8])
    assert sample_indices(labels) == [3, 2, 1, 18, 4, 8, 11, 0, 19, 7]


def test_grid_places_rows_and_tiles():
    originals = np.zeros((10, 28, 28), dtype=np.float32)
    recons = np.ones((10, 28, 28), dtype=np.float32)
    grid = reconstruction_grid([originals, recons])
    assert grid.dtype == np.uint8
    assert grid.shape == ((2 * (28 + GAP) + GAP) * SCALE, (10 * (28 + GAP) + GAP) * SCALE)
    top = GAP * SCALE
    assert grid[top : top + 28 * SCALE, top : top + 28 * SCALE].max() == 0  # first original
    second_row = (GAP + 28 + GAP) * SCALE
    assert grid[second_row : second_row + 28 * SCALE, top : top + 28 * SCALE].min() == 255
