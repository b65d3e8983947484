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
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    views = model_views(model, images, [0, 3], [(1, 2), (4, 5)], explored=30)
    assert views.samples.shape == (2, 1, 28, 28) and views.reconstructions.shape == (30, 1, 28, 28)
    expected = reconstruct(model, images[[0, 3]]).reshape(2, 1, 28, 28)
    np.testing.assert_allclose(views.samples, expected.numpy())
    codes = encode_all(model, images, torch.device("cpu"))
    np.testing.assert_allclose(views.points, project_3d(codes)[:30])  # PCA over all 40 codes
    assert [walk.shape for walk in views.walks] == [(10, 1, 28, 28)] * 2
    expected = interpolate(model, torch.from_numpy(codes[4]), torch.from_numpy(codes[5]))
    np.testing.assert_allclose(views.walks[1], expected.numpy())


class TinyRgb(torch.nn.Module):
    """A small real autoencoder of 3 x 8 x 8 images: linear encoder, sigmoid decoder."""

    def __init__(self, latent_dim: int = 4) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(3 * 8 * 8, latent_dim)
        self.decoder = torch.nn.Linear(latent_dim, 3 * 8 * 8)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.reshape(len(x), -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).reshape(len(z), 3, 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def test_views_of_rgb_images_keep_their_three_channels():
    torch.manual_seed(0)
    model = TinyRgb()
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    views = model_views(model, images, [0, 1, 2], [(0, 1)], explored=12)
    assert views.samples.shape == (3, 3, 8, 8) and views.reconstructions.shape == (12, 3, 8, 8)
    assert views.walks[0].shape == (10, 3, 8, 8)
    assert not np.allclose(views.samples[:, 0], views.samples[:, 1])  # not grey
