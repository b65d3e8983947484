"""The study's central figure: the traces it holds and the numbers behind them."""

import numpy as np
import pandas as pd
import pytest

from pipeline.analysis.pca import PcaFloors
from pipeline.analysis.plots import png_bytes
from pipeline.analysis.tradeoff import mse_vs_latent_plotly, mse_vs_latent_png

FLOORS = PcaFloors(
    uncentered=[0.1 / (k + 1) for k in range(784)] + [0.0],
    centered=[0.09 / (k + 1) for k in range(785)],
    digest="test",
)
FLOOR_NAME = "PCA floor (uncentered, k = 1..784)"


@pytest.fixture
def configs() -> pd.DataFrame:
    rows = [
        ("conv-d3", "conv", 3, 3, 0.033, 0.032, 0.034, 199_556),
        ("conv-d100", "conv", 100, 3, 0.0025, 0.0024, 0.0027, 596_965),
        ("linear-d10", "linear", 10, 3, 0.0343, 0.0342, 0.0344, 15_680),
    ]
    columns = [
        "model", "kind", "latent_dim", "seeds", "final_test_mse_mean", "final_test_mse_min",
        "final_test_mse_max", "params_total",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_plotly_figure_has_floor_models_and_parameter_traces(configs):
    fig = mse_vs_latent_plotly(configs, FLOORS)
    names = [t.name for t in fig.data]
    assert names == [
        FLOOR_NAME,
        "conv (mean; bars: min to max over 3 seeds)",
        "conv parameters",
        "linear (mean; bars: min to max over 3 seeds)",
        "linear parameters",
    ]
    floor = fig.data[0]
    assert list(floor.x) == list(range(1, 784))  # k = 784 reconstructs exactly: 0, off a log axis
    assert floor.y[9] == pytest.approx(0.1 / 11)  # k = 10
    conv = fig.data[1]
    assert list(conv.x) == [3, 100] and list(conv.y) == pytest.approx([0.033, 0.0025])
    assert list(conv.error_y.array) == pytest.approx([0.001, 0.0002])
    assert list(conv.error_y.arrayminus) == pytest.approx([0.001, 0.0001])
    assert list(fig.data[2].y) == [199_556, 596_965] and fig.data[2].xaxis == "x2"
    assert fig.layout.xaxis.type == fig.layout.yaxis.type == "log"


def test_png_figure_has_two_log_panels(configs):
    fig = mse_vs_latent_png(configs, FLOORS)
    mse_ax, params_ax = fig.axes
    assert mse_ax.get_xscale() == mse_ax.get_yscale() == params_ax.get_yscale() == "log"
    labels = [t.get_text() for t in mse_ax.get_legend().get_texts()]
    assert labels[0] == FLOOR_NAME and "conv (mean" in labels[1] and "linear" in labels[2]
    (floor, *_) = mse_ax.get_lines()
    np.testing.assert_allclose(floor.get_xdata(), np.arange(1, 784))
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_one_seed_labels_plainly(configs):
    fig = mse_vs_latent_plotly(configs.assign(seeds=1), FLOORS)
    assert [t.name for t in fig.data][1] == "conv"
