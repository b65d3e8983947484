"""PCA floors: exact on synthetic data, and the real MNIST floors against FACTS.md."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.analysis.pca import cache_path, compute_floors, read_cached, residual_mse, write_cache
from pipeline.training.datasets.mnist import Mnist

# FACTS.md, "Analytic references": k -> (centered, uncentered); k=0 is the mean image
# (centered) and the all-zero output (uncentered).
FACTS = {
    0: (0.06747, 0.11396),
    3: (0.05161, 0.05268),
    10: (0.03407, 0.03420),
    100: (0.005616, 0.005618),
    250: (0.001460, 0.001460),
}


def three_figures(x: float) -> str:
    return f"{x:.3g}"


def test_floors_are_exact_on_low_rank_data():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0]  # an orthonormal 2-D subspace of R^6
    train = rng.normal(size=(50, 2)) @ basis.T
    test = rng.normal(size=(20, 2)) @ basis.T
    floors = residual_mse(train, test)
    assert len(floors) == 7
    assert floors[0] == pytest.approx((test**2).mean())  # nothing kept: all-zero output
    assert floors[1] > 0 and floors[2] == pytest.approx(0, abs=1e-12)
    assert all(a >= b for a, b in zip(floors, floors[1:], strict=False))


@pytest.fixture(scope="module")
def mnist_floors(mnist_dir: Path):
    data = Mnist().load(mnist_dir, log=lambda line: None)
    return compute_floors(data.train.images.numpy(), data.test.images.numpy(), data.digest)


@pytest.mark.parametrize("k", sorted(FACTS))
def test_mnist_floors_match_facts_to_three_figures(mnist_floors, k):
    centered, uncentered = FACTS[k]
    assert three_figures(mnist_floors.floor(k)) == three_figures(uncentered)
    assert three_figures(mnist_floors.floor(k, centered=True)) == three_figures(centered)


def test_hinton_salakhutdinov_pca_reference(mnist_floors):
    # FACTS.md: PCA with 30 components, 13.87 squared error per image = 0.01769 per pixel.
    assert three_figures(mnist_floors.floor(30, centered=True)) == "0.0177"
    assert mnist_floors.floor(784) == pytest.approx(0, abs=1e-12)
    assert mnist_floors.floor(10_000) == mnist_floors.floor(784)


def test_cache_round_trip_is_keyed_by_digest(mnist_floors, tmp_path: Path):
    assert read_cached(tmp_path, mnist_floors.digest) is None
    path = write_cache(tmp_path, mnist_floors)
    assert path == cache_path(tmp_path, mnist_floors.digest) and path.parent.name == "MNIST"
    assert read_cached(tmp_path, mnist_floors.digest) == mnist_floors
    assert read_cached(tmp_path, "another-digest") is None
    path.write_text("{not json")
    assert read_cached(tmp_path, mnist_floors.digest) is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files
