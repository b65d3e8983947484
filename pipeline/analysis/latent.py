"""Latent codes and how well they separate the classes, in numbers.

The exercise says the classes "do not form well-separated clusters". Two numbers test
that per model: the accuracy of a 5-nearest-neighbour classifier on the codes (fitted on
the training codes, scored on the test codes) and the silhouette score of the test codes
by class (1: tight, separated clusters; about 0: overlapping ones).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits
from torch import nn

from pipeline.training.tensors import EVAL_BATCH, prepare_model, to_model_input

KNN_NEIGHBOURS = 5
SILHOUETTE_SAMPLE = 5000
"""Silhouette costs O(n^2): it is computed on this many test codes, drawn with a fixed
seed (SILHOUETTE_SEED), so the same codes always give the same score."""
SILHOUETTE_SEED = 0


@torch.inference_mode()
def encode_all(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Codes of uint8 images (n, C, H, W) as a float32 array (n, d), in batches."""
    model = prepare_model(model, device).eval()
    codes = [
        model.encode(to_model_input(images[i : i + batch_size], device)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(codes).numpy()


def knn_accuracy(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
) -> float:
    """Share of test codes whose 5 nearest training codes (Euclidean) vote their class."""
    knn = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, len(train_codes)), n_jobs=-1)
    knn.fit(train_codes, train_labels)
    return float(knn.score(test_codes, test_labels))


def silhouette(codes: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of the codes grouped by class, on at most SILHOUETTE_SAMPLE codes
    drawn with SILHOUETTE_SEED; NaN when fewer than two classes are present."""
    if len(np.unique(labels)) < 2 or len(np.unique(labels)) >= len(labels):
        return float("nan")
    sample = min(SILHOUETTE_SAMPLE, len(codes))
    return float(silhouette_score(codes, labels, sample_size=sample, random_state=SILHOUETTE_SEED))


def latent_quality(
    train_codes: np.ndarray,
    train_labels: np.ndarray,
    test_codes: np.ndarray,
    test_labels: np.ndarray,
) -> tuple[float, float]:
    """(kNN k=5 test accuracy, silhouette of the test codes by class)."""
    accuracy = knn_accuracy(train_codes, train_labels, test_codes, test_labels)
    return accuracy, silhouette(test_codes, test_labels)


def project_3d(codes: np.ndarray) -> np.ndarray:
    """Codes as 3D points: the codes themselves when d <= 3 (zero-padded), else their
    projection onto the top three principal components (centered, via SVD)."""
    codes = np.asarray(codes, dtype=np.float64)
    if codes.shape[1] <= 3:
        return np.pad(codes, ((0, 0), (0, 3 - codes.shape[1])))
    centered = codes - codes.mean(axis=0)
    with threadpool_limits(1, user_api="blas"):  # see pipeline.analysis.pca.compute_floors
        _, _, components = np.linalg.svd(centered, full_matrices=False)
    return centered @ components[:3].T
