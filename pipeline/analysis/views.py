"""What one trained model shows of itself on the comparison's page: its reconstructions of
the sample images, its test codes in 3D, its reconstructions of the explorer's images, and
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
"""Test images shown in the latent explorer per model (the first ones of the test set):
enough to see the clusters, few enough to keep their thumbnails light (a sheet of 600
reconstructions is 200-600 kB of base64 PNG, the noisier the model the larger)."""


@dataclass(frozen=True)
class ModelViews:
    samples: np.ndarray
    """Reconstructions of the sample images, (s, C, H, W) in [0, 1]."""
    points: np.ndarray
    """The explored images' codes in 3D, (n, 3): the codes themselves at d <= 3, else
    their projection on the top three principal components of all the test codes."""
    reconstructions: np.ndarray
    """Reconstructions of the explored images, (n, C, H, W) in [0, 1]."""
    walks: list[np.ndarray]
    """Per pair, the images (steps, C, H, W) decoded from the first image's code to the
    second's."""


def model_views(
    model: nn.Module,
    test_images: torch.Tensor,
    sample_index: list[int],
    pairs: list[tuple[int, int]],
    explored: int = EXPLORED,
) -> ModelViews:
    """A model's views of the uint8 test images (n, C, H, W), on the CPU."""
    codes = encode_all(model, test_images, torch.device("cpu"))
    shape = test_images.shape[1:]
    walks = [
        interpolate(model, torch.from_numpy(codes[a]), torch.from_numpy(codes[b])) for a, b in pairs
    ]
    return ModelViews(
        samples=_reconstructed(model, test_images[sample_index]),
        points=project_3d(codes)[:explored],
        reconstructions=_reconstructed(model, test_images[:explored]),
        walks=[walk.reshape(len(walk), *shape).numpy() for walk in walks],
    )


def _reconstructed(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Reconstructions in the images' own shape (n, C, H, W), whatever the model returns."""
    return reconstruct(model, images).reshape(images.shape).numpy()
