"""Seeds grouped by configuration: mean, spread and the recommendation. Pure pandas.

Input is the per-run report of pipeline.analysis.report.summarize. A configuration is a model
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
    others = healthy[healthy["model"] != pick["model"]]
    # the pick is smallest and best: only a rival's seeds could push it out of the margin
    alone = runner is None and pick["model"] == best["model"] and len(others)
    rival = others.loc[others[mean].idxmin()] if alone else None
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
        spread_note(pick, best, runner, margin, rival),
    )


def _above(row: pd.Series, best: pd.Series) -> float:
    return row["final_test_mse_mean"] / best["final_test_mse_mean"] - 1


def _decision(row: pd.Series, best: pd.Series, margin: float, picked: bool) -> str:
    """Whether a decision of the rule holds seed against seed: the pick's worst seed still
    within the margin of the best configuration's best seed, or a rejected configuration's
    best seed still outside it against the best one's worst."""
    if picked:
        own, other = row["final_test_mse_max"], best["final_test_mse_min"]
        holds = own <= other * (1 + margin)
        seeds, verdict = ("worst", "best"), ("within", "outside")
    else:
        own, other = row["final_test_mse_min"], best["final_test_mse_max"]
        holds = own > other * (1 + margin)
        seeds, verdict = ("best", "worst"), ("outside", "within")
    change = own / other - 1
    said = (
        f"{row['model']}'s {seeds[0]} seed ({own:.5f}) is {abs(change):.1%} "
        f"{'above' if change >= 0 else 'below'} {best['model']}'s {seeds[1]} ({other:.5f}): "
    )
    if holds:
        return said + f"{verdict[0]} the {margin:.0%} margin on every pair of seeds"
    return (
        said + f"{verdict[1]} the {margin:.0%} margin for some pairs of seeds, so the seed "
        "spread is larger than the margin here and more seeds could change the pick"
    )


def spread_note(
    pick: pd.Series,
    best: pd.Series,
    runner: pd.Series | None,
    margin: float,
    rival: pd.Series | None = None,
) -> str:
    """Whether the pick's decisions are larger than the seed spread, or why the spread
    is unknown. `rival`: when the pick is both the smallest and the best, the next best
    configuration, whose best seed is weighed against the pick's worst."""
    involved = [r for r in (pick, best, runner, rival) if r is not None]
    if min(int(r["seeds"]) for r in involved) < 2:
        return (
            "The spread between seeds is unknown: the pick rests on configurations trained "
            "from one seed. Run main with seeds=0,1,2 to measure it."
        )
    decisions = [] if pick["model"] == best["model"] else [_decision(pick, best, margin, True)]
    if runner is not None:
        decisions.append(_decision(runner, best, margin, False))
    if rival is not None:
        decisions.append(_decision(pick, rival, margin, True))
    if not decisions:
        return "The pick is the only configuration that did not collapse."
    return "; ".join(decisions) + "."
