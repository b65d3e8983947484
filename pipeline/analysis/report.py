"""The comparison's per-run numbers: pure DataFrame -> DataFrame, no tracking, no files.

Input is what tracking.query returns: one row per finished training run (typed params,
summary metrics, its configuration's name and its host) and the per-epoch
train_mse/test_mse histories in long format. pipeline/analysis/spread.py groups the rows by
configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.analysis.pca import PcaFloors
from pipeline.training.health import CONSTANT_STD, PLATEAU_RATIO

COLUMNS = [
    "model", "config", "seed", "run_id", "kind", "latent_dim", "params_total",
    "params_encoder", "params_decoder", "compression_ratio", "final_train_mse",
    "final_test_mse", "gap", "relative_gap", "best_test_mse", "best_epoch",
    "gap_widening_from", "psnr_db", "train_seconds", "pca_floor", "ratio_to_pca",
    "pca_floor_centered", "knn5_accuracy", "silhouette", "output_std", "collapsed",
    "restarts", "restarts_constant", "restarts_plateau", "stalled_epochs", "host",
]  # fmt: skip
# Columns a run may lack (older runs, hand-built frames), with what stands in for them.
OPTIONAL = {
    "seed": pd.NA,
    "restarts": 0.0,
    "restarts_constant": 0.0,
    "restarts_plateau": 0.0,
    "host": "unknown host",
}


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


def _curve_summary(curve: pd.DataFrame, stall_mse: float) -> dict[str, object]:
    if curve.empty:
        return {
            "best_test_mse": np.nan,
            "best_epoch": pd.NA,
            "gap_widening_from": pd.NA,
            "stalled_epochs": "",
        }
    best = curve.loc[curve["test_mse"].idxmin()]
    widening = widening_from(curve["gap"].tolist(), curve["epoch"].tolist())
    stalled = curve.loc[curve["test_mse"] >= stall_mse, "epoch"]
    return {
        "best_test_mse": best["test_mse"],
        "best_epoch": int(best["epoch"]),
        "gap_widening_from": pd.NA if widening is None else widening,
        "stalled_epochs": ",".join(str(int(e)) for e in stalled),
    }


def summarize(runs: pd.DataFrame, histories: pd.DataFrame, floors: PcaFloors) -> pd.DataFrame:
    """The generalization-gap report: one row per run, columns COLUMNS, sorted by kind,
    latent size and seed. A model is "collapsed" when its output no longer depends on its
    input: output_std under CONSTANT_STD (the training loop's own test), or, for runs that
    did not log output_std, a test MSE no better than the all-black output's (less 1%).
    stalled_epochs lists the recorded epochs whose test MSE sat at the all-black level
    (at least PLATEAU_RATIO times the all-black output's, the health check's threshold)."""
    by_run = dict(tuple(curves(histories).groupby("run_id"))) if len(histories) else {}
    empty = pd.DataFrame(columns=["epoch", "test_mse", "gap"])
    out = runs.rename(columns={"run_name": "model"}).copy()
    for column, default in OPTIONAL.items():
        if column not in out:
            out[column] = default
    if "config" not in out:
        out["config"] = out["model"]
    stall = PLATEAU_RATIO * floors.floor(0)
    summaries = pd.DataFrame([_curve_summary(by_run.get(r, empty), stall) for r in out["run_id"]])
    out[summaries.columns] = summaries.to_numpy()
    dims = out["latent_dim"].astype(int)
    out["compression_ratio"] = floors.pixels / dims
    out["gap"] = out["final_test_mse"] - out["final_train_mse"]
    out["relative_gap"] = out["gap"] / out["final_train_mse"]
    out["psnr_db"] = out["final_test_mse"].map(psnr)
    out["pca_floor"] = [floors.floor(d) for d in dims]
    out["pca_floor_centered"] = [floors.floor(d, centered=True) for d in dims]
    out["ratio_to_pca"] = out["final_test_mse"] / out["pca_floor"].replace(0.0, np.nan)
    black = out["final_test_mse"] >= 0.99 * floors.floor(0)
    out["collapsed"] = (out["output_std"] < CONSTANT_STD) | (out["output_std"].isna() & black)
    restarts = ["restarts", "restarts_constant", "restarts_plateau"]
    out[restarts] = out[restarts].fillna(0)
    counts = ["params_total", "params_encoder", "params_decoder", "seed", *restarts]
    out = out.astype({"best_test_mse": "float64", "best_epoch": "Int64"})
    out = out.astype({"gap_widening_from": "Int64", **dict.fromkeys(counts, "Int64")})
    order = ["kind", "latent_dim", "seed"]
    return out.sort_values(order, kind="stable")[COLUMNS].reset_index(drop=True)
