"""Latent codes and their quality numbers."""

import numpy as np
import pytest
import torch

from pipeline.analysis.latent import (
    encode_all,
    knn_accuracy,
    latent_quality,
    project_3d,
    silhouette,
)
from pipeline.training.models import build_model


def clusters(n_per: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten Gaussian blobs in 5-D, one per class, at +-10 on each axis."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per)
    centres = np.vstack([10 * np.eye(5), -10 * np.eye(5)])
    return centres[labels] + spread * rng.normal(size=(len(labels), 5)), labels


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_encode_all_matches_encode_in_one_batch(kind):
    torch.manual_seed(0)
    model = build_model(kind, 7)
    images = torch.randint(0, 256, (25, 1, 28, 28), dtype=torch.uint8)
    codes = encode_all(model, images, torch.device("cpu"), batch_size=10)
    with torch.inference_mode():
        expected = model.encode(images.float() / 255.0).numpy()
    assert codes.shape == (25, 7) and codes.dtype == np.float32
    np.testing.assert_allclose(codes, expected, rtol=1e-5, atol=1e-5)


def test_separated_clusters_score_high_and_noise_scores_low():
    train, train_labels = clusters(40, 0.5, seed=0)
    test, test_labels = clusters(20, 0.5, seed=1)
    accuracy, sil = latent_quality(train, train_labels, test, test_labels)
    assert accuracy == 1.0 and sil > 0.8
    rng = np.random.default_rng(2)
    shuffled = rng.permutation(test_labels)
    assert knn_accuracy(train, rng.permutation(train_labels), test, shuffled) < 0.3
    assert silhouette(test, shuffled) < 0.0  # random groups: no better than neighbours


def test_silhouette_subsample_is_reproducible():
    codes, labels = clusters(600, 8.0, seed=3)  # 6,000 codes: above the sample size
    assert silhouette(codes, labels) == silhouette(codes, labels)
    assert np.isnan(silhouette(codes[:5], np.zeros(5)))


def test_project_3d():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(200, 3))
    np.testing.assert_array_equal(project_3d(codes), codes)
    assert project_3d(codes[:, :2])[:, 2].tolist() == [0.0] * 200
    wide = rng.normal(size=(200, 10)) * np.arange(10, 0, -1)  # variance falls with the axis
    points = project_3d(wide)
    assert points.shape == (200, 3)
    variances = points.var(axis=0)
    assert variances[0] >= variances[1] >= variances[2]
    top = np.sort(np.linalg.eigvalsh(np.cov(wide.T, bias=True)))[::-1][:3]
    np.testing.assert_allclose(variances, top, rtol=1e-8)
