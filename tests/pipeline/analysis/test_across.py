"""The cross-dataset answer on a hand-built two-dataset comparison, against numbers worked
out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.analysis.across import (
    across_display,
    across_plotly,
    across_png,
    across_table,
    pca_reaching,
    reaching,
)
from pipeline.analysis.pca import PcaFloors
from pipeline.analysis.plots import png_bytes
from pipeline.analysis.render import ReportDoc
from pipeline.analysis.report import summarize
from pipeline.analysis.spread import aggregate, recommend
from tests.pipeline.analysis.test_report import FLOORS, hand_built

# A second dataset of 3 x 32 x 32 images: uncentered[k] = 0.2 / (k + 1), k = 0..3072.
RGB_FLOORS = PcaFloors(
    uncentered=[0.2 / (k + 1) for k in range(3073)],
    centered=[0.18 / (k + 1) for k in range(3073)],
    digest="rgb",
)
# config, kind, latent dim, seed, final train MSE, final test MSE, output std, restarts
RGB_RUNS = [
    ("conv-d3", "conv", 3, 0, 0.028, 0.030, 0.3, (0, 0)),
    ("conv-d10", "conv", 10, 0, 0.011, 0.012, 0.3, (0, 0)),
    ("conv-d100", "conv", 100, 0, 0.0035, 0.004, 0.3, (0, 0)),
    ("linear-d10", "linear", 10, 0, 0.019, 0.020, 0.2, (0, 0)),
]


def db(mse: float) -> float:
    return 10 * math.log10(1 / mse)


def study(dataset: str, runs, floors: PcaFloors) -> tuple[ReportDoc, PcaFloors]:
    report = summarize(*hand_built(runs), floors)
    configs = aggregate(report)
    excluded = pd.DataFrame(columns=["run_id", "run_name", "status", "reason"])
    doc = ReportDoc(f"comparison ({dataset})", "hand-built", report, configs, [],
                    recommend(configs), excluded, dataset=dataset)  # fmt: skip
    return doc, floors


@pytest.fixture
def studies() -> list[tuple[ReportDoc, PcaFloors]]:
    from tests.pipeline.analysis.test_report import RUNS

    return [study("mnist", RUNS, FLOORS), study("cifar10", RGB_RUNS, RGB_FLOORS)]


def test_compression_ratio_is_the_datasets_own_pixels_over_d(studies):
    (mnist, _), (cifar, _) = studies
    assert mnist.report.set_index("model").at["conv-d10-s0", "compression_ratio"] == 78.4
    assert cifar.report.set_index("model").at["conv-d3-s0", "compression_ratio"] == 1024


def test_table_against_hand_computation(studies):
    table = across_table(studies, psnr_target=20.0).set_index("dataset")
    assert list(table.index) == ["mnist", "cifar10"]
    assert list(table["pixels"]) == [784, 3072]
    # mnist: conv-d100 (0.0105) is the only one within 26% of itself, the lowest; cifar10 alike
    assert list(table["recommended"]) == ["conv-d100", "conv-d100"]
    assert table.at["mnist", "recommended_test_mse"] == pytest.approx(0.0105)
    assert table.at["cifar10", "recommended_psnr_db"] == pytest.approx(db(0.004))
    # 20 dB: mnist's best healthy mean is 0.0105 (19.8 dB), conv-d250 collapsed: none
    assert pd.isna(table.at["mnist", "reaching"]) and pd.isna(table.at["mnist", "reaching_d"])
    assert table.at["cifar10", "reaching"] == "conv-d100"  # 24.0 dB; conv-d10 is 19.2
    assert table.at["cifar10", "reaching_psnr_db"] == pytest.approx(db(0.004))
    # PCA: 0.1 / (k + 1) <= 0.01 from k = 9; 0.2 / (k + 1) <= 0.01 from k = 19
    assert list(table["pca_k_reaching"]) == [9, 19]


def test_smallest_latent_size_reaching_a_lower_target(studies):
    (mnist, _), (cifar, _) = studies
    # 15 dB: mnist conv-d3 is 13.6 (mean of 13.77 and 13.37), conv-d10 16.8, linear-d10 14.4
    assert reaching(mnist.configs, 15.0)["model"] == "conv-d10"
    assert reaching(cifar.configs, 15.0)["model"] == "conv-d3"  # 0.030: 15.2 dB
    assert reaching(mnist.configs, 13.5)["model"] == "conv-d3"
    expected = (db(0.042) + db(0.046)) / 2  # the mean of the seeds' PSNRs
    assert reaching(mnist.configs, 13.5)["psnr_db_mean"] == pytest.approx(expected)


def test_pca_reaching_where_floors_are_missing():
    nan = PcaFloors([0.1, *[math.nan] * 4], [0.09, *[math.nan] * 4], "big")
    assert pca_reaching(nan, 20.0) is None and pca_reaching(nan, 5.0) == 0


def test_display_states_the_target_and_none(studies):
    shown = across_display(across_table(studies, psnr_target=20.0))
    assert "smallest reaching 20 dB" in shown.columns and "PCA k reaching 20 dB" in shown.columns
    assert list(shown["smallest reaching 20 dB"]) == ["none", "conv-d100"]
    assert list(shown["its test MSE"]) == ["0.01050", "0.00400"]


def test_figures_hold_every_dataset_with_its_floor(studies):
    fig = across_plotly(studies, psnr_target=20.0)
    names = [t.name for t in fig.data]
    for dataset in ("mnist", "cifar10"):
        assert names.count(f"{dataset} conv") == 2 and names.count(f"{dataset} PCA floor") == 2
    cifar_conv = [t for t in fig.data if t.name == "cifar10 conv"]
    assert list(cifar_conv[0].x) == [3, 10, 100]
    assert list(cifar_conv[0].y) == pytest.approx([0.030, 0.012, 0.004])
    assert list(cifar_conv[1].y) == pytest.approx([db(0.030), db(0.012), db(0.004)])
    mse_floor, psnr_floor = [t for t in fig.data if t.name == "cifar10 PCA floor"]
    assert mse_floor.x[0] == 1 and mse_floor.y[0] == pytest.approx(0.1)
    np.testing.assert_allclose(psnr_floor.y, 10 * np.log10(1 / np.asarray(mse_floor.y)))
    png = across_png(studies, psnr_target=20.0)
    mse_ax, psnr_ax = png.axes
    labels = [t.get_text() for t in psnr_ax.get_legend().get_texts()]
    assert "cifar10 PCA floor" in labels and "target 20 dB" in labels
    assert png_bytes(png).startswith(b"\x89PNG")
