"""The summarizing layer on a hand-built frame, against numbers worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.analysis.observations import observations
from pipeline.analysis.pca import PcaFloors
from pipeline.analysis.render import ReportDoc, to_console, to_description, to_html, to_markdown
from pipeline.analysis.report import curves, psnr, summarize, widening_from
from pipeline.analysis.spread import aggregate, recommend

# uncentered[k] = 0.1 / (k + 1), centered[k] = 0.09 / (k + 1)
FLOORS = PcaFloors(
    uncentered=[0.1 / (k + 1) for k in range(785)],
    centered=[0.09 / (k + 1) for k in range(785)],
    digest="test",
)
# config, kind, latent dim, seed, final train MSE, final test MSE, output std, restarts
# (constant, plateau)
RUNS = [
    ("conv-d3", "conv", 3, 0, 0.040, 0.042, 0.3, (2, 0)),
    ("conv-d3", "conv", 3, 1, 0.043, 0.046, 0.3, (1, 1)),
    ("conv-d10", "conv", 10, 0, 0.020, 0.021, 0.3, (0, 0)),
    ("conv-d100", "conv", 100, 0, 0.010, 0.0105, 0.3, (0, 0)),
    ("conv-d250", "conv", 250, 0, 0.1120, 0.1140, 0.0, (0, 0)),
    ("linear-d10", "linear", 10, 0, 0.036, 0.0360, 0.2, (0, 0)),
]
# per-epoch (train MSE, test MSE), by run name
CURVES = {
    "conv-d3-s0": ([0.06, 0.05, 0.045, 0.041], [0.055, 0.048, 0.0445, 0.042]),
    "conv-d3-s1": ([0.11, 0.06, 0.05, 0.044], [0.095, 0.052, 0.0475, 0.046]),
    "conv-d10-s0": ([0.03, 0.025, 0.022, 0.02], [0.026, 0.020, 0.0205, 0.0212]),
    "conv-d100-s0": ([0.02, 0.015, 0.012, 0.0112], [0.016, 0.012, 0.0115, 0.0105]),
    "conv-d250-s0": ([0.113, 0.112], [0.1141, 0.1140]),
    "linear-d10-s0": ([0.05, 0.04], [0.04, 0.036]),
}


def hand_built(runs=RUNS) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, history = [], []
    for i, (config, kind, d, seed, train, test, std, (constant, plateau)) in enumerate(runs):
        name = f"{config}-s{seed}"
        rows.append(
            {
                "run_id": f"r{i}",
                "run_name": name,
                "config": config,
                "seed": seed,
                "kind": kind,
                "latent_dim": d,
                "final_train_mse": train,
                "final_test_mse": test,
                "output_std": std,
                "params_total": 1000 * d,
                "params_encoder": 400 * d,
                "params_decoder": 600 * d,
                "train_seconds": 10.0 * d,
                "knn5_accuracy": 0.5 + d / 1000 + seed / 100,
                "silhouette": 0.01 * i,
                "restarts": constant + plateau,
                "restarts_constant": constant,
                "restarts_plateau": plateau,
                "host": "AMD EPYC, AVX512, 2 threads" if i % 2 else "AMD EPYC, AVX2, 2 threads",
            }
        )
        for metric, curve in zip(("train_mse", "test_mse"), CURVES[name], strict=True):
            history += [(f"r{i}", metric, epoch, v) for epoch, v in enumerate(curve, 1)]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter
    return frame, pd.DataFrame(history, columns=["run_id", "metric", "step", "value"])


@pytest.fixture
def report() -> pd.DataFrame:
    return summarize(*hand_built(), FLOORS)


@pytest.fixture
def configs(report) -> pd.DataFrame:
    return aggregate(report)


def test_report_is_sorted_and_complete(report):
    assert report["model"].tolist() == [
        "conv-d3-s0",
        "conv-d3-s1",
        "conv-d10-s0",
        "conv-d100-s0",
        "conv-d250-s0",
        "linear-d10-s0",
    ]
    assert not report.drop(columns=["gap_widening_from"]).isna().any().any()


def test_columns_equal_a_hand_computation(report):
    row = report.set_index("model").loc["conv-d10-s0"]
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
    assert widening["conv-d3-s0"] == 1
    assert widening["conv-d10-s0"] == 2
    assert widening["conv-d100-s0"] is pd.NA
    assert widening["linear-d10-s0"] == 1
    assert widening_from([0.1], [1]) is None
    assert widening_from([3.0, 2.0, 1.0], [1, 2, 3]) is None
    assert widening_from([1.0, 3.0, 2.0, 2.5, 2.6], [5, 6, 7, 8, 9]) == 7


def test_stalled_epochs_are_those_at_the_all_black_level(report):
    # The threshold: 0.8 x the all-black output's 0.1 = 0.08. conv-d3-s1's first epoch
    # (0.095) and every epoch of the collapsed conv-d250-s0 sat there.
    stalled = report.set_index("model")["stalled_epochs"]
    assert stalled["conv-d3-s1"] == "1" and stalled["conv-d250-s0"] == "1,2"
    assert stalled["conv-d3-s0"] == stalled["conv-d100-s0"] == ""


def test_collapse_is_read_from_output_spread(report):
    assert report.set_index("model")["collapsed"].to_dict() == {
        "conv-d3-s0": False,
        "conv-d3-s1": False,
        "conv-d10-s0": False,
        "conv-d100-s0": False,
        "conv-d250-s0": True,
        "linear-d10-s0": False,
    }
    runs, history = hand_built()
    runs["output_std"] = np.nan  # runs that did not log it: all-black-level MSE means collapse
    legacy = summarize(runs, history, FLOORS).set_index("model")["collapsed"]
    assert legacy[legacy].index.tolist() == ["conv-d250-s0"]  # 0.1140 >= 0.99 * 0.1


def test_configurations_aggregate_their_seeds_as_by_hand(configs):
    assert configs["model"].tolist() == [
        "conv-d3",
        "conv-d10",
        "conv-d100",
        "conv-d250",
        "linear-d10",
    ]
    d3 = configs.set_index("model").loc["conv-d3"]
    assert (d3["seeds"], d3["seed_list"]) == (2, "0,1")
    # test MSE 0.042, 0.046: mean 0.044, sample SD sqrt(2 * 0.002^2 / 1) = 0.0028284
    assert d3["final_test_mse_mean"] == pytest.approx(0.044)
    assert d3["final_test_mse_std"] == pytest.approx(0.0028284271)
    assert (d3["final_test_mse_min"], d3["final_test_mse_max"]) == (0.042, 0.046)
    # gaps 0.002 and 0.003
    assert d3["gap_mean"] == pytest.approx(0.0025) and d3["gap_std"] == pytest.approx(
        0.001 / math.sqrt(2)
    )
    psnrs = [10 * math.log10(1 / 0.042), 10 * math.log10(1 / 0.046)]
    assert d3["psnr_db_mean"] == pytest.approx(sum(psnrs) / 2)
    assert d3["psnr_db_min"] == pytest.approx(min(psnrs))
    # 5-NN accuracy 0.503 and 0.513
    assert d3["knn5_accuracy_mean"] == pytest.approx(0.508)
    assert d3["knn5_accuracy_max"] == pytest.approx(0.513)
    assert d3["ratio_to_pca"] == pytest.approx(0.044 / 0.025)
    assert (d3["restarts"], d3["restarts_constant"], d3["restarts_plateau"]) == (4, 3, 1)
    assert d3["stalled_runs"] == 1 and d3["best_run_id"] == "r0"
    d10 = configs.set_index("model").loc["conv-d10"]
    assert d10["seeds"] == 1 and math.isnan(d10["final_test_mse_std"])  # unknown, not 0
    assert configs.set_index("model").loc["conv-d250", "collapsed_runs"] == 1


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
        (3.5, "conv-d3"),  # <= 0.04725: conv-d3's mean, 0.044
    ],
)
def test_recommendation_rule_uses_the_means(configs, margin, pick):
    rec = recommend(configs, margin)
    assert rec.model == pick
    assert rec.run_id == configs.set_index("model").loc[pick, "best_run_id"]
    assert f"within {margin:.0%}" in rec.rule and rec.model in rec.why


def test_recommendation_weighs_its_margins_against_the_seed_spread(configs):
    # One seed for the pick (conv-d100): the spread is unknown.
    assert "spread between seeds is unknown" in recommend(configs, 0.1).spread
    two = configs.copy()
    two["seeds"] = 2
    d10 = two["model"] == "conv-d10"
    two.loc[d10, ["final_test_mse_min", "final_test_mse_max"]] = [0.020, 0.022]
    # conv-d3 picked (mean 0.044 <= 4.5 x 0.0105); its worst seed 0.046 is 338.1% above
    # conv-d100's 0.0105, inside the 350% margin; nothing smaller was rejected.
    rec = recommend(two, 3.5)
    assert rec.spread == (
        "conv-d3's worst seed (0.04600) is 338.1% above conv-d100's best (0.01050): within "
        "the 350% margin on every pair of seeds."
    )
    # conv-d10 picked: its worst seed 0.022 is 109.5% above the best, inside 120%; the
    # rejected conv-d3's best seed 0.042 is 300% above, outside it.
    rec = recommend(two, 1.2)
    assert "conv-d10's worst seed (0.02200) is 109.5% above" in rec.spread
    assert "within the 120% margin on every pair of seeds" in rec.spread
    assert "conv-d3's best seed (0.04200) is 300.0% above conv-d100's worst" in rec.spread
    assert "outside the 120% margin on every pair of seeds" in rec.spread
    two.loc[d10, "final_test_mse_max"] = 0.024  # 128.6% above the best: past the margin
    rec = recommend(two, 1.2)
    assert "outside the 120% margin for some pairs of seeds" in rec.spread
    assert "more seeds could change the pick" in rec.spread
    # conv-d3 both the smallest and the best: its worst seed is weighed against the next
    # best configuration's best seed (conv-d100, 0.0105).
    d3 = two["model"] == "conv-d3"
    two.loc[d3, ["final_test_mse_mean", "final_test_mse_min", "final_test_mse_max"]] = [
        0.009,
        0.0085,
        0.0095,
    ]
    rec = recommend(two, 0.1)
    assert rec.model == "conv-d3"
    assert rec.spread == (
        "conv-d3's worst seed (0.00950) is 9.5% below conv-d100's best (0.01050): within "
        "the 10% margin on every pair of seeds."
    )
    two.loc[d3, "final_test_mse_max"] = 0.012
    rec = recommend(two, 0.1)
    assert rec.spread.startswith("conv-d3's worst seed (0.01200) is 14.3% above conv-d100's")
    assert "outside the 10% margin for some pairs of seeds" in rec.spread


def test_recommendation_needs_a_healthy_model(configs):
    with pytest.raises(ValueError, match="collapsed"):
        recommend(configs.assign(collapsed_runs=1))


def test_observations_are_computed(report, configs):
    text = "\n".join(observations(report, configs, FLOORS))
    assert "Lowest mean test MSE: conv-d100 (d=100), 0.01050 over 1 seed" in text
    # conv mean gaps by d: 0.0025, 0.001, 0.0005, 0.002
    assert "d=3 +2.50e-03, d=10 +1.00e-03, d=100 +5.00e-04, d=250 +2.00e-03" in text
    assert "does not change monotonically" in text
    assert "conv-d3 4 (3 constant output, 1 stuck at the all-black loss)" in text
    assert (
        "Recorded epochs at the all-black loss: conv-d3-s1 epochs 1; conv-d250-s0 epochs 1,2"
        in text
    )
    assert "Collapsed to a constant output: conv-d250-s0." in text
    assert "No model collapsed" not in text
    assert "linear-d10 reaches 3.960x its optimum" in text  # 0.036 / (0.1 / 11)
    assert "silhouette by class 0.000 to 0.050 (no substantial" in text
    assert "AMD EPYC, AVX512, 2 threads (3 runs)" in text
    assert "AMD EPYC, AVX2, 2 threads (3 runs)" in text
    assert "more than one host" in text


def test_no_model_collapsed_only_when_the_whole_history_is_clean():
    clean = [r for r in RUNS if r[0] in ("conv-d10", "conv-d100", "linear-d10")]
    report = summarize(*hand_built(clean), FLOORS)
    text = "\n".join(observations(report, aggregate(report), FLOORS))
    assert "No model collapsed: no initialisation was restarted" in text
    monotone = aggregate(report[report["kind"] == "conv"])
    lines = observations(report[report["kind"] == "conv"], monotone, FLOORS)
    assert any("it shrinks as d grows" in line for line in lines)
    assert "No linear baseline among the compared runs." in lines
    assert "more than one host" in "\n".join(lines)  # conv-d10 on AVX2, conv-d100 on AVX512
    restarted = [(*clean[0][:7], (0, 1))] + clean[1:]
    report = summarize(*hand_built(restarted), FLOORS)
    text = "\n".join(observations(report, aggregate(report), FLOORS))
    assert "No model collapsed" not in text and "conv-d10 1 (1 stuck at the all-black" in text


def test_renderings_carry_the_same_content(report, configs):
    excluded = pd.DataFrame(
        [("x1", "conv-d3", "FAILED", "DivergedError: lower lr"), ("x2", "conv-d10", "RUNNING", "")],
        columns=["run_id", "run_name", "status", "reason"],
    )
    rec = recommend(configs)
    doc = ReportDoc("comparison-test", "hand-built", report, configs, ["obs one"], rec, excluded)
    doc.images["Loss curves"] = b"\x89PNG fake"
    for text in (to_markdown(doc), to_html(doc), to_console(doc), to_description(doc)):
        assert "conv-d100" in text and "conv-d3 (x1): FAILED (DivergedError: lower lr)" in text
        assert "conv-d10 (x2): RUNNING" in text and "RUNNING (" not in text
        assert "0.04400 ± 0.00283" in text  # conv-d3's mean test MSE and its SD
    markdown, page = to_markdown(doc), to_html(doc)
    assert rec.rule in markdown and "obs one" in markdown and rec.spread in markdown
    assert "| conv-d10-s0" in markdown and "0.02100" in markdown  # numbers as formatted
    assert "data:image/png;base64," in page and "http" not in page  # self-contained
    description = to_description(doc)  # the runs' Description box in the MLflow UI
    assert f"**Recommended: {rec.model}.**" in description and rec.spread in description
    assert "| conv-d10 " in description and "report.html" in description


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


def test_observations_of_images_without_classes_skip_the_clusters(report, configs):
    text = "\n".join(observations(report, configs, FLOORS, labelled=False))
    assert "no classes" in text and "silhouette" not in text
