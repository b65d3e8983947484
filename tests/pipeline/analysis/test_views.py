"""A model's views for the comparison page: their shapes, and that they are the model's own
reconstructions, codes and interpolations."""

import numpy as np
import torch

from pipeline.analysis.interpolate import interpolate
from pipeline.analysis.latent import encode_all, project_3d
from pipeline.analysis.views import model_views
from pipeline.training.models import build_model
from pipeline.training.tensors import reconstruct


def test_views_of_a_model():
    torch.manual_seed(0)
    model = build_model("conv", 5)
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8)
    views = model_views(model, images, [0, 3], [(1, 2), (4, 5)], explored=30)
    assert views.samples.shape == (2, 28, 28) and views.reconstructions.shape == (30, 28, 28)
    np.testing.assert_allclose(views.samples, reconstruct(model, images[[0, 3]]).numpy())
    codes = encode_all(model, images, torch.device("cpu"))
    np.testing.assert_allclose(views.points, project_3d(codes)[:30])  # PCA over all 40 codes
    assert [walk.shape for walk in views.walks] == [(10, 28, 28)] * 2
    expected = interpolate(model, torch.from_numpy(codes[4]), torch.from_numpy(codes[5]))
    np.testing.assert_allclose(views.walks[1], expected.numpy())
