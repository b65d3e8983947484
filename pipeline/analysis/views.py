"""What one trained model shows of itself on the comparison's page: its reconstructions of
the sample digits, its test codes in 3D, its reconstructions of the explorer's digits, and
the images decoded between pairs of test codes. Pure: a model and images in, arrays out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.analysis.interpolate import interpolate
from pipeline.analysis.latent import encode_all, project_3d
from pipeline.training.tensors import reconstruct

EXPLORED = 600
"""Test digits shown in the latent explorer per model (the first ones of the test set):
enough to see the clusters, few enough to keep their thumbnails light (a sheet of 600
reconstructions is 200-600 kB of base64 PNG, the noisier the model the larger)."""


@dataclass(frozen=True)
class ModelViews:
    samples: np.ndarray
    """Reconstructions of the sample digits, (s, 28, 28) in [0, 1]."""
    points: np.ndarray
    """The explored digits' codes in 3D, (n, 3): the codes themselves at d <= 3, else
    their projection on the top three principal components of all the test codes."""
    reconstructions: np.ndarray
    """Reconstructions of the explored digits, (n, 28, 28) in [0, 1]."""
    walks: list[np.ndarray]
    """Per pair, the images decoded from the first digit's code to the second's."""


def model_views(
    model: nn.Module,
    test_images: torch.Tensor,
    sample_index: list[int],
    pairs: list[tuple[int, int]],
    explored: int = EXPLORED,
) -> ModelViews:
    """A model's views of the uint8 test images (n, 28, 28), on the CPU."""
    codes = encode_all(model, test_images, torch.device("cpu"))
    shown = test_images[:explored]
    walks = [
        interpolate(model, torch.from_numpy(codes[a]), torch.from_numpy(codes[b])).numpy()
        for a, b in pairs
    ]
    return ModelViews(
        samples=reconstruct(model, test_images[sample_index]).numpy(),
        points=project_3d(codes)[:explored],
        reconstructions=reconstruct(model, shown).numpy(),
        walks=walks,
    )
