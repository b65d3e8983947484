"""The comparison's figures: the traces and images they hold."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from pipeline.analysis.images import reconstruction_grid
from pipeline.analysis.plots import (
    CLASS_COLOURS,
    interpolations_figure,
    latent_scatter_3d,
    loss_curves_plotly,
    loss_curves_png,
    png_bytes,
    reconstruction_figure,
)


@pytest.fixture
def curves() -> pd.DataFrame:
    """One run per label: no seed spread."""
    rows = [
        (label, f"r{i}", epoch, 0.1 / (epoch + i), 0.11 / (epoch + i))
        for i, label in enumerate(["conv-d3", "conv-d10", "linear-d10"])
        for epoch in (1, 2, 3)
    ]
    return pd.DataFrame(rows, columns=["label", "run_id", "epoch", "train_mse", "test_mse"])


@pytest.fixture
def seeded(curves) -> pd.DataFrame:
    """conv-d10 gets a second seed whose test MSE is twice the first's."""
    second = curves[curves["label"] == "conv-d10"].assign(run_id="r9")
    second["test_mse"] *= 2
    return pd.concat([curves, second], ignore_index=True)


def test_loss_curves_png_has_train_and_test_per_model(curves):
    fig = loss_curves_png(curves)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert sorted(lines) == sorted(
        f"{m} {s}" for m in curves["label"].unique() for s in ("train", "test")
    )
    np.testing.assert_allclose(lines["conv-d10 test"].get_ydata(), [0.11 / 2, 0.11 / 3, 0.11 / 4])
    assert lines["conv-d10 test"].get_color() == lines["conv-d10 train"].get_color()
    assert ax.get_yscale() == "log"
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_loss_curves_plotly_groups_each_models_lines(curves):
    fig = loss_curves_plotly(curves)
    assert [t.name for t in fig.data] == [
        f"{m} {s}" for m in ("conv-d3", "conv-d10", "linear-d10") for s in ("test", "train")
    ]
    assert {t.legendgroup for t in fig.data[:2]} == {"conv-d3"}
    assert list(fig.data[3].y) == pytest.approx([0.1 / 2, 0.1 / 3, 0.1 / 4])  # conv-d10 train


def test_seeds_are_drawn_as_their_mean_and_a_min_to_max_band(seeded):
    fig = loss_curves_png(seeded)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    mean = [1.5 * 0.11 / e for e in (2, 3, 4)]  # (x + 2x) / 2
    np.testing.assert_allclose(lines["conv-d10 test"].get_ydata(), mean)
    (band,) = ax.collections  # only conv-d10 has a spread
    low_high = band.get_paths()[0].vertices[:, 1]
    assert low_high.min() == pytest.approx(0.11 / 4) and low_high.max() == pytest.approx(0.22 / 2)
    assert "band: min to max of 2" in ax.get_title()
    page = loss_curves_plotly(seeded)
    bands = [t for t in page.data if t.name.startswith("conv-d10 test m")]
    assert [t.name for t in bands] == ["conv-d10 test max", "conv-d10 test min"]
    assert list(bands[0].y) == pytest.approx([0.22 / 2, 0.22 / 3, 0.22 / 4])
    assert bands[1].fill == "tonexty" and not bands[1].showlegend


def test_reconstruction_figure_stacks_originals_and_models():
    originals = np.zeros((10, 28, 28))
    rows = {"conv-d3": np.full((10, 28, 28), 0.5), "linear-d10": np.ones((10, 28, 28))}
    fig = reconstruction_figure(originals, rows)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["original", "conv-d3", "linear-d10"]
    (image,) = ax.get_images()
    np.testing.assert_array_equal(
        image.get_array(), reconstruction_grid([originals, *rows.values()])
    )


FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")  # fmt: skip


def test_latent_scatter_has_one_trace_per_class_named_with_hover():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=500)
    points = rng.normal(size=(500, 3))
    fig = latent_scatter_3d(points, labels, "codes", FASHION)
    assert [t.type for t in fig.data] == ["scatter3d"] * 10
    assert [t.name for t in fig.data] == list(FASHION)
    for label, trace in enumerate(fig.data):
        index = np.flatnonzero(labels == label)
        np.testing.assert_array_equal(trace.customdata, index)
        np.testing.assert_array_equal(trace.z, points[index, 2])
        assert trace.marker.color == CLASS_COLOURS[label]
        assert FASHION[label] in trace.hovertemplate and "%{customdata}" in trace.hovertemplate
    assert fig.layout.showlegend is not False


def test_latent_scatter_without_classes_is_one_trace_of_every_point():
    points = np.random.default_rng(0).normal(size=(50, 3))
    (trace,) = latent_scatter_3d(points, np.zeros(50, dtype=int), "codes").data
    assert trace.name == "test images" and list(trace.customdata) == list(range(50))


def test_interpolations_figure_has_one_labelled_row_per_walk():
    rows = {f"conv-d3: {a} to {b}": np.full((10, 28, 28), a / 10) for a, b in ((1, 7), (3, 8))}
    fig = interpolations_figure(rows)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows)
    (image,) = ax.get_images()
    np.testing.assert_array_equal(image.get_array(), reconstruction_grid(list(rows.values())))
    assert png_bytes(fig).startswith(b"\x89PNG")
