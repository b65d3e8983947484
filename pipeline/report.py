"""The comparison's numbers: pure DataFrame -> DataFrame, no tracking, no files.

Input is what tracking.query returns: one row per finished training run (typed params
and summary metrics) and the per-epoch train_mse/test_mse histories in long format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import DEFAULT_MARGIN
from pipeline.models import PIXELS
from pipeline.pca import PcaFloors
from pipeline.train import COLLAPSE_STD

COLUMNS = [
    "model", "run_id", "kind", "latent_dim", "params_total", "params_encoder",
    "params_decoder", "compression_ratio", "final_train_mse", "final_test_mse", "gap",
    "relative_gap", "best_test_mse", "best_epoch", "gap_widening_from", "psnr_db",
    "train_seconds", "pca_floor", "ratio_to_pca", "pca_floor_centered", "knn5_accuracy",
    "silhouette", "output_std", "collapsed",
]  # fmt: skip


def widening_from(gaps: Sequence[float], epochs: Sequence[int]) -> int | None:
    """The first epoch from which the gap rises at every later epoch up to the last one;
    None if it did not rise over the last epoch (or there is only one)."""
    start = len(gaps) - 1
    while start > 0 and gaps[start - 1] < gaps[start]:
        start -= 1
    return int(epochs[start]) if start < len(gaps) - 1 else None


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for pixels in [0, 1], of the mean MSE."""
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def curves(histories: pd.DataFrame) -> pd.DataFrame:
    """Histories as one row per (run_id, epoch) with train_mse, test_mse and gap columns.

    The gap is test_mse minus train_eval_mse, the training MSE of the same end-of-epoch
    weights; runs without it fall back to train_mse, the mean over the epoch's batches,
    which lags the weights and so overstates how the gap grows."""
    wide = histories.pivot_table(index=["run_id", "step"], columns="metric", values="value")
    wide = wide.reset_index().rename(columns={"step": "epoch"}).sort_values(["run_id", "epoch"])
    same_weights = wide.get("train_eval_mse", wide["train_mse"]).fillna(wide["train_mse"])
    wide["gap"] = wide["test_mse"] - same_weights
    return wide


def _curve_summary(curve: pd.DataFrame) -> dict[str, object]:
    if curve.empty:
        return {"best_test_mse": np.nan, "best_epoch": pd.NA, "gap_widening_from": pd.NA}
    best = curve.loc[curve["test_mse"].idxmin()]
    widening = widening_from(curve["gap"].tolist(), curve["epoch"].tolist())
    return {
        "best_test_mse": best["test_mse"],
        "best_epoch": int(best["epoch"]),
        "gap_widening_from": pd.NA if widening is None else widening,
    }


def summarize(runs: pd.DataFrame, histories: pd.DataFrame, floors: PcaFloors) -> pd.DataFrame:
    """The generalization-gap report: one row per run, columns COLUMNS, sorted by kind and
    latent size. A model is "collapsed" when its output no longer depends on its input:
    output_std under COLLAPSE_STD (the training loop's own test), or, for runs that did not
    log output_std, a test MSE no better than the all-black output's (less 1%)."""
    by_run = dict(tuple(curves(histories).groupby("run_id"))) if len(histories) else {}
    empty = pd.DataFrame(columns=["epoch", "test_mse", "gap"])
    out = runs.rename(columns={"run_name": "model"}).copy()
    summaries = pd.DataFrame([_curve_summary(by_run.get(r, empty)) for r in out["run_id"]])
    out[summaries.columns] = summaries.to_numpy()
    dims = out["latent_dim"].astype(int)
    out["compression_ratio"] = PIXELS / dims
    out["gap"] = out["final_test_mse"] - out["final_train_mse"]
    out["relative_gap"] = out["gap"] / out["final_train_mse"]
    out["psnr_db"] = out["final_test_mse"].map(psnr)
    out["pca_floor"] = [floors.floor(d) for d in dims]
    out["pca_floor_centered"] = [floors.floor(d, centered=True) for d in dims]
    out["ratio_to_pca"] = out["final_test_mse"] / out["pca_floor"].replace(0.0, np.nan)
    black = out["final_test_mse"] >= 0.99 * floors.floor(0)
    out["collapsed"] = (out["output_std"] < COLLAPSE_STD) | (out["output_std"].isna() & black)
    counts = ["params_total", "params_encoder", "params_decoder"]
    out = out.astype({"best_test_mse": "float64", "best_epoch": "Int64"})
    out = out.astype({"gap_widening_from": "Int64", **dict.fromkeys(counts, "Int64")})
    return out.sort_values(["kind", "latent_dim"], kind="stable")[COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class Recommendation:
    model: str
    run_id: str
    latent_dim: int
    rule: str
    why: str


def recommend(report: pd.DataFrame, margin: float = DEFAULT_MARGIN) -> Recommendation:
    """Among models that did not collapse, the smallest latent size whose final test MSE is
    within `margin` (relative) of the lowest; at equal size, the lower MSE wins."""
    rule = (
        f"Among the models that did not collapse, pick the smallest latent size whose final "
        f"test MSE is within {margin:.0%} ({10 * math.log10(1 + margin):.1f} dB of PSNR) of the "
        "lowest final test MSE; at equal size, the "
        "lower MSE wins."
    )
    healthy = report[~report["collapsed"]]
    if healthy.empty:
        raise ValueError("every compared model collapsed: nothing to recommend")
    best = healthy.loc[healthy["final_test_mse"].idxmin()]
    eligible = healthy[healthy["final_test_mse"] <= best["final_test_mse"] * (1 + margin)]
    pick = eligible.sort_values(["latent_dim", "final_test_mse"], kind="stable").iloc[0]
    over = pick["final_test_mse"] / best["final_test_mse"] - 1
    why = (
        f"{pick['model']} (d={pick['latent_dim']}, compression {pick['compression_ratio']:.1f}x, "
        f"{pick['params_total']:,} parameters) has test MSE {pick['final_test_mse']:.5f}, "
        + (
            "the lowest of all"
            if pick["run_id"] == best["run_id"]
            else f"{over:.1%} above the lowest, {best['model']}'s {best['final_test_mse']:.5f}"
        )
    )
    smaller = healthy[healthy["latent_dim"] < pick["latent_dim"]]
    if not smaller.empty:
        runner = smaller.loc[smaller["final_test_mse"].idxmin()]
        runner_over = runner["final_test_mse"] / best["final_test_mse"] - 1
        why += f"; the best smaller model, {runner['model']}, is {runner_over:.0%} above the lowest"
    return Recommendation(
        str(pick["model"]), str(pick["run_id"]), int(pick["latent_dim"]), rule, why + "."
    )


SILHOUETTE_STRUCTURE = 0.25
"""Below this mean silhouette, Kaufman & Rousseeuw (1990) read "no substantial structure"."""


def _series(values: pd.Series, fmt: str) -> str:
    return ", ".join(f"d={d} {format(v, fmt)}" for d, v in values.items())


def _trend(values: pd.Series) -> str:
    steps = np.diff(values.to_numpy(dtype=float))
    if len(steps) == 0:
        return "only one latent size, so no trend"
    if (steps > 0).all():
        return "it grows with d"
    if (steps < 0).all():
        return "it shrinks as d grows"
    return "it does not change monotonically with d"


def observations(report: pd.DataFrame, floors: PcaFloors) -> list[str]:
    """What the numbers say, in sentences computed from the report (never hand-written)."""
    healthy = report[~report["collapsed"]]
    lines = []
    if not healthy.empty:
        best = healthy.loc[healthy["final_test_mse"].idxmin()]
        lines.append(
            f"Lowest test MSE: {best['model']} (d={best['latent_dim']}), "
            f"{best['final_test_mse']:.5f} ({best['psnr_db']:.1f} dB PSNR)."
        )
    lines += _conv_lines(report) + _collapse_lines(report, floors)
    linear = report[report["kind"] == "linear"]
    lines += [
        f"{row.model} reaches {row.ratio_to_pca:.3f}x its optimum, the uncentered PCA floor "
        f"for k={row.latent_dim} ({row.final_test_mse:.5f} vs {row.pca_floor:.5f})."
        for row in linear.itertuples()
    ] or ["No linear baseline among the compared runs."]
    return lines + [_clusters(report)]


def _conv_lines(report: pd.DataFrame) -> list[str]:
    """How the gap and the distance to the PCA floor change with d (median per size)."""
    conv = report[report["kind"] == "conv"].groupby("latent_dim")
    if not len(conv):
        return []
    gap, ratio = conv["gap"].median(), conv["ratio_to_pca"].median().dropna()
    lines = [f"Generalization gap of the conv models: {_series(gap, '+.2e')}; {_trend(gap)}."]
    if len(ratio):
        lines.append(f"Conv test MSE over the PCA floor of the same k: {_series(ratio, '.2f')}.")
    return lines


def _collapse_lines(report: pd.DataFrame, floors: PcaFloors) -> list[str]:
    collapsed = report[report["collapsed"]]
    lines = [
        "Collapsed to a constant output: " + ", ".join(collapsed["model"])
        if len(collapsed)
        else "No model collapsed: every model's output varies with its input."
    ]
    mean_image = floors.floor(0, centered=True)
    weak = report[~report["collapsed"] & (report["final_test_mse"] >= mean_image)]
    if len(weak):
        lines.append(
            f"No better than the mean training image (test MSE {mean_image:.5f}), though not "
            "collapsed: " + ", ".join(weak["model"]) + "."
        )
    return lines


def _clusters(report: pd.DataFrame) -> str:
    sil, knn = report["silhouette"].dropna(), report["knn5_accuracy"].dropna()
    if sil.empty or knn.empty:
        return "Latent quality was not logged by these runs."
    verdict = "no" if sil.max() < SILHOUETTE_STRUCTURE else "some"
    return (
        f"Latent codes: silhouette by digit {sil.min():.3f} to {sil.max():.3f} ({verdict} "
        f"substantial cluster structure; below {SILHOUETTE_STRUCTURE} reads as none), while "
        f"5-NN digit accuracy is {knn.min():.1%} to {knn.max():.1%}."
    )
