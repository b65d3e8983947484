"""The summarizing layer on a hand-built frame, against numbers worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.pca import PcaFloors
from pipeline.render import ReportDoc, to_console, to_html, to_markdown
from pipeline.report import curves, observations, psnr, recommend, summarize, widening_from

# uncentered[k] = 0.1 / (k + 1), centered[k] = 0.09 / (k + 1)
FLOORS = PcaFloors(
    uncentered=[0.1 / (k + 1) for k in range(785)],
    centered=[0.09 / (k + 1) for k in range(785)],
    digest="test",
)
# name, kind, latent dim, final train MSE, final test MSE, output std
RUNS = [
    ("conv-d3", "conv", 3, 0.040, 0.042, 0.3),
    ("conv-d10", "conv", 10, 0.020, 0.021, 0.3),
    ("conv-d100", "conv", 100, 0.010, 0.0105, 0.3),
    ("conv-d250", "conv", 250, 0.1120, 0.1140, 0.0),
    ("linear-d10", "linear", 10, 0.036, 0.0360, 0.2),
]
# per-epoch (train MSE, test MSE)
CURVES = {
    "conv-d3": ([0.06, 0.05, 0.045, 0.041], [0.055, 0.048, 0.0445, 0.042]),
    "conv-d10": ([0.03, 0.025, 0.022, 0.02], [0.026, 0.020, 0.0205, 0.0212]),
    "conv-d100": ([0.02, 0.015, 0.012, 0.0112], [0.016, 0.012, 0.0115, 0.0105]),
    "conv-d250": ([0.113, 0.112], [0.1141, 0.1140]),
    "linear-d10": ([0.05, 0.04], [0.04, 0.036]),
}


def hand_built() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, history = [], []
    for i, (name, kind, d, train, test, std) in enumerate(RUNS):
        rows.append(
            {
                "run_id": f"r{i}",
                "run_name": name,
                "kind": kind,
                "latent_dim": d,
                "final_train_mse": train,
                "final_test_mse": test,
                "output_std": std,
                "params_total": 1000 * d,
                "params_encoder": 400 * d,
                "params_decoder": 600 * d,
                "train_seconds": 10.0 * d,
                "knn5_accuracy": 0.5 + d / 1000,
                "silhouette": 0.01 * i,
            }
        )
        for metric, curve in zip(("train_mse", "test_mse"), CURVES[name], strict=True):
            history += [(f"r{i}", metric, epoch, v) for epoch, v in enumerate(curve, 1)]
    runs = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter
    return runs, pd.DataFrame(history, columns=["run_id", "metric", "step", "value"])


@pytest.fixture
def report() -> pd.DataFrame:
    return summarize(*hand_built(), FLOORS)


def test_report_is_sorted_and_complete(report):
    assert report["model"].tolist() == [
        "conv-d3",
        "conv-d10",
        "conv-d100",
        "conv-d250",
        "linear-d10",
    ]
    assert not report.drop(columns=["gap_widening_from"]).isna().any().any()


def test_columns_equal_a_hand_computation(report):
    row = report.set_index("model").loc["conv-d10"]
    assert row["compression_ratio"] == pytest.approx(78.4)
    assert row["gap"] == pytest.approx(0.001)
    assert row["relative_gap"] == pytest.approx(0.05)
    assert row["psnr_db"] == pytest.approx(16.77780705)  # 10 log10(1 / 0.021)
    assert (row["best_test_mse"], row["best_epoch"]) == (pytest.approx(0.020), 2)
    assert row["pca_floor"] == pytest.approx(0.1 / 11)
    assert row["pca_floor_centered"] == pytest.approx(0.09 / 11)
    assert row["ratio_to_pca"] == pytest.approx(0.021 / (0.1 / 11))
    assert (row["params_total"], row["params_encoder"], row["params_decoder"]) == (
        10000,
        4000,
        6000,
    )


def test_gap_widening_epochs(report):
    # gaps per epoch: d3 rising throughout; d10 -0.004 -0.005 -0.0015 +0.0012 (from 2);
    # d100 -0.004 -0.003 -0.0005 -0.0007 (none); linear -0.01 -0.004.
    widening = report.set_index("model")["gap_widening_from"]
    assert widening["conv-d3"] == 1
    assert widening["conv-d10"] == 2
    assert widening["conv-d100"] is pd.NA
    assert widening["linear-d10"] == 1
    assert widening_from([0.1], [1]) is None
    assert widening_from([3.0, 2.0, 1.0], [1, 2, 3]) is None
    assert widening_from([1.0, 3.0, 2.0, 2.5, 2.6], [5, 6, 7, 8, 9]) == 7


def test_collapse_is_read_from_output_spread(report):
    assert report.set_index("model")["collapsed"].to_dict() == {
        "conv-d3": False,
        "conv-d10": False,
        "conv-d100": False,
        "conv-d250": True,
        "linear-d10": False,
    }
    runs, history = hand_built()
    runs["output_std"] = np.nan  # runs that did not log it: all-black-level MSE means collapse
    legacy = summarize(runs, history, FLOORS).set_index("model")["collapsed"]
    assert legacy[legacy].index.tolist() == ["conv-d250"]  # 0.1140 >= 0.99 * 0.1


def test_psnr():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(0.0) == math.inf


@pytest.mark.parametrize(
    ("margin", "pick"),
    [
        (0.0, "conv-d100"),  # the best itself (the collapsed d=250 is never eligible)
        (0.10, "conv-d100"),  # d10 is 100% above the best 0.0105
        (1.2, "conv-d10"),  # <= 0.0231
        (2.5, "conv-d10"),  # <= 0.03675: linear-d10 (0.036) has the same d but a higher MSE
        (3.5, "conv-d3"),  # <= 0.04725
    ],
)
def test_recommendation_rule(report, margin, pick):
    rec = recommend(report, margin)
    assert rec.model == pick
    assert rec.run_id == report.set_index("model").loc[pick, "run_id"]
    assert f"within {margin:.0%}" in rec.rule and rec.model in rec.why


def test_recommendation_needs_a_healthy_model(report):
    with pytest.raises(ValueError, match="collapsed"):
        recommend(report.assign(collapsed=True))


def test_observations_are_computed(report):
    text = "\n".join(observations(report, FLOORS))
    assert "Lowest test MSE: conv-d100 (d=100), 0.01050" in text
    # conv gaps by d: 0.002, 0.001, 0.0005, 0.002
    assert "d=3 +2.00e-03, d=10 +1.00e-03, d=100 +5.00e-04, d=250 +2.00e-03" in text
    assert "does not change monotonically" in text
    assert "Collapsed to a constant output: conv-d250" in text
    assert "linear-d10 reaches 3.960x its optimum" in text  # 0.036 / (0.1 / 11)
    assert "silhouette by digit 0.000 to 0.040 (no substantial" in text
    monotone = observations(report[report["latent_dim"] < 250], FLOORS)
    assert any("it shrinks as d grows" in line for line in monotone)
    conv_only = observations(report[report["kind"] == "conv"], FLOORS)
    assert "No linear baseline among the compared runs." in conv_only


def test_renderings_carry_the_same_content(report):
    excluded = pd.DataFrame([("x1", "conv-d3", "FAILED")], columns=["run_id", "run_name", "status"])
    rec = recommend(report)
    doc = ReportDoc("comparison-test", "hand-built", report, ["obs one"], rec, excluded)
    doc.images["Loss curves"] = b"\x89PNG fake"
    for text in (to_markdown(doc), to_html(doc), to_console(doc)):
        assert "conv-d100" in text and "conv-d3 (x1): FAILED" in text
    markdown, page = to_markdown(doc), to_html(doc)
    assert rec.rule in markdown and "obs one" in markdown
    assert "| conv-d10" in markdown and "0.02100" in markdown  # numbers as formatted
    assert "data:image/png;base64," in page and "http" not in page  # self-contained


def test_epoch_gap_uses_the_same_weights_training_mse_when_logged():
    history = pd.DataFrame(
        [
            ("r", "train_mse", 1, 0.050),  # mean over the epoch's batches: lags the weights
            ("r", "train_eval_mse", 1, 0.030),
            ("r", "test_mse", 1, 0.032),
            ("r", "train_mse", 2, 0.030),
            ("r", "test_mse", 2, 0.031),  # an older run without train_eval_mse at epoch 2
        ],
        columns=["run_id", "metric", "step", "value"],
    )
    gaps = curves(history)["gap"].tolist()
    assert gaps == pytest.approx([0.032 - 0.030, 0.031 - 0.030])
