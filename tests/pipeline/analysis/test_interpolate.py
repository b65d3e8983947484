"""Interpolation between two codes: its shape, and that its ends are the two codes' decodes."""

import pytest
import torch

from pipeline.analysis.interpolate import interpolate, pair_indices
from pipeline.training.models import build_model


@pytest.mark.parametrize(("kind", "latent_dim"), [("conv", 3), ("conv", 10), ("linear", 10)])
def test_interpolation_shapes_and_end_points(kind, latent_dim):
    torch.manual_seed(0)
    model = build_model(kind, latent_dim).eval()
    start, end = torch.randn(latent_dim), torch.randn(latent_dim)
    images = interpolate(model, start, end)
    assert images.shape == (10, 1, 28, 28) and images.dtype == torch.float32
    with torch.inference_mode():
        first, last = model.decode(start[None]), model.decode(end[None])
    torch.testing.assert_close(images[0], first[0])
    torch.testing.assert_close(images[9], last[0])
    assert not torch.allclose(images[0], images[9])  # the two ends differ
    middle = interpolate(model, start, end, steps=3)[1]
    with torch.inference_mode():
        halfway = model.decode(((start + end) / 2)[None])[0]
    torch.testing.assert_close(middle, halfway)


def test_interpolation_needs_two_steps():
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(build_model("linear", 2), torch.zeros(2), torch.ones(2), steps=1)


def test_pairs_are_the_first_test_image_of_each_class():
    labels = torch.tensor([7, 1, 3, 1, 8, 7, 4])
    assert pair_indices(labels) == [(1, 0), (2, 4)]  # no 9: the (4, 9) pair is left out
    assert pair_indices(torch.tensor([5, 5, 0])) == [(0, 1)]  # no pair: the first two


def test_pairs_without_classes_are_the_first_test_images():
    assert pair_indices(torch.zeros(10, dtype=torch.long)) == [(0, 1), (2, 3), (4, 5)]
