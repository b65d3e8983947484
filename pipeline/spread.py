"""Seeds grouped by configuration: mean, spread and the recommendation. Pure pandas.

Input is the per-run report of pipeline.report.summarize. A configuration is a model
kind and latent size ("conv-d100"); its seeds are its runs. Standard deviations are
sample ones (n - 1): with one seed they are unknown (NaN), never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from pipeline.config import DEFAULT_MARGIN

SPREAD_METRICS = ("final_test_mse", "gap", "psnr_db", "knn5_accuracy")
STATS = ("mean", "std", "min", "max")
CONFIG_COLUMNS = [
    "model", "kind", "latent_dim", "seeds", "seed_list", "params_total",
    "compression_ratio", "pca_floor",
    *(f"{m}_{s}" for m in SPREAD_METRICS for s in STATS),
    "ratio_to_pca", "train_seconds_mean", "restarts", "restarts_constant",
    "restarts_plateau", "stalled_runs", "collapsed_runs", "best_run_id",
]  # fmt: skip


def _config_row(runs: pd.DataFrame) -> dict[str, object]:
    first = runs.iloc[0]
    healthy = runs[~runs["collapsed"]]
    best = (healthy if len(healthy) else runs)["final_test_mse"].idxmin()
    row = {
        "model": first["config"],
        "kind": first["kind"],
        "latent_dim": int(first["latent_dim"]),
        "seeds": len(runs),
        "seed_list": ",".join(str(s) for s in runs["seed"].dropna().astype(int)),
        "params_total": first["params_total"],
        "compression_ratio": first["compression_ratio"],
        "pca_floor": first["pca_floor"],
        "train_seconds_mean": runs["train_seconds"].mean(),
        "restarts": int(runs["restarts"].sum()),
        "restarts_constant": int(runs["restarts_constant"].sum()),
        "restarts_plateau": int(runs["restarts_plateau"].sum()),
        "stalled_runs": int((runs["stalled_epochs"] != "").sum()),
        "collapsed_runs": int(runs["collapsed"].sum()),
        "best_run_id": runs.loc[best, "run_id"],
    }
    for metric in SPREAD_METRICS:
        values = runs[metric].astype(float)
        row.update(
            {
                f"{metric}_mean": values.mean(),
                f"{metric}_std": values.std(ddof=1),  # NaN for one seed
                f"{metric}_min": values.min(),
                f"{metric}_max": values.max(),
            }
        )
    row["ratio_to_pca"] = (
        row["final_test_mse_mean"] / first["pca_floor"] if first["pca_floor"] else math.nan
    )
    return row


def aggregate(report: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (columns CONFIG_COLUMNS), sorted by kind and latent size.
    best_run_id is the seed with the lowest final test MSE among those that did not
    collapse: the model a pick of this configuration registers as champion."""
    groups = report.groupby(["kind", "latent_dim"], sort=True)
    rows = [_config_row(runs) for _, runs in groups]
    out = pd.DataFrame(rows, columns=CONFIG_COLUMNS)
    return out.astype({"params_total": "Int64"}).reset_index(drop=True)


@dataclass(frozen=True)
class Recommendation:
    model: str
    """The configuration picked, e.g. "conv-d100"."""
    run_id: str
    """Its best seed's run: the model that becomes champion."""
    latent_dim: int
    rule: str
    why: str
    spread: str
    """Whether the differences the pick rests on are larger than the seed spread."""


def recommend(configs: pd.DataFrame, margin: float = DEFAULT_MARGIN) -> Recommendation:
    """Among configurations none of whose seeds collapsed, the smallest latent size whose
    mean final test MSE is within `margin` (relative) of the lowest mean; at equal size,
    the lower mean wins."""
    rule = (
        "Among the configurations none of whose seeds collapsed, pick the smallest latent "
        f"size whose mean final test MSE over its seeds is within {margin:.0%} "
        f"({10 * math.log10(1 + margin):.1f} dB of PSNR) of the lowest mean; at equal size, "
        "the lower mean wins. The champion is the pick's seed with the lowest test MSE."
    )
    healthy = configs[configs["collapsed_runs"] == 0]
    if healthy.empty:
        raise ValueError("every compared configuration has a collapsed seed: nothing to recommend")
    mean = "final_test_mse_mean"
    best = healthy.loc[healthy[mean].idxmin()]
    eligible = healthy[healthy[mean] <= best[mean] * (1 + margin)]
    pick = eligible.sort_values(["latent_dim", mean], kind="stable").iloc[0]
    smaller = healthy[healthy["latent_dim"] < pick["latent_dim"]]
    runner = smaller.loc[smaller[mean].idxmin()] if len(smaller) else None
    why = (
        f"{pick['model']} (d={pick['latent_dim']}, compression {pick['compression_ratio']:.1f}x, "
        f"{pick['params_total']:,} parameters) has mean test MSE {pick[mean]:.5f}, "
        + (
            "the lowest of all"
            if pick["model"] == best["model"]
            else f"{_above(pick, best):.1%} above the lowest, {best['model']}'s {best[mean]:.5f}"
        )
    )
    if runner is not None:
        why += f"; the best smaller one, {runner['model']}, is {_above(runner, best):.0%} above it"
    return Recommendation(
        str(pick["model"]),
        str(pick["best_run_id"]),
        int(pick["latent_dim"]),
        rule,
        why + ".",
        spread_note(pick, best, runner),
    )


def _above(row: pd.Series, best: pd.Series) -> float:
    return row["final_test_mse_mean"] / best["final_test_mse_mean"] - 1


def _versus(a: pd.Series, b: pd.Series) -> str:
    """Whether two configurations' mean test MSEs differ by more than their seed spread:
    their ranges (min to max over seeds) do not overlap."""
    lo, hi = sorted((a, b), key=lambda r: r["final_test_mse_mean"])
    gap = hi["final_test_mse_mean"] / lo["final_test_mse_mean"] - 1
    separate = lo["final_test_mse_max"] < hi["final_test_mse_min"]
    return f"{hi['model']}'s mean is {gap:.1%} above {lo['model']}'s, " + (
        "more than the seed spread (their ranges over seeds do not overlap)"
        if separate
        else "within the seed spread (their ranges over seeds overlap): more seeds "
        "could change the pick"
    )


def spread_note(pick: pd.Series, best: pd.Series, runner: pd.Series | None) -> str:
    """The pick's margins against the seed spread, or why the spread is unknown."""
    involved = [r for r in (pick, best, runner) if r is not None]
    if min(int(r["seeds"]) for r in involved) < 2:
        return (
            "The spread between seeds is unknown: the pick rests on configurations trained "
            "from one seed. Run main with seeds=0,1,2 to measure it."
        )
    pairs = [(pick, best)] if pick["model"] != best["model"] else []
    pairs += [(runner, pick)] if runner is not None else []
    if not pairs:
        return "The pick is the only configuration that did not collapse."
    return "; ".join(_versus(a, b) for a, b in pairs) + "."
