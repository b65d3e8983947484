"""What the numbers say, in sentences computed from the report (never hand-written)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.analysis.pca import PcaFloors

SILHOUETTE_STRUCTURE = 0.25
"""Below this mean silhouette, Kaufman & Rousseeuw (1990) read "no substantial structure"."""


def observations(
    report: pd.DataFrame, configs: pd.DataFrame, floors: PcaFloors, labelled: bool = True
) -> list[str]:
    """report: per run (pipeline.analysis.report.summarize); configs: per configuration
    (pipeline.analysis.spread.aggregate); labelled: whether the images have classes."""
    lines = []
    healthy = configs[configs["collapsed_runs"] == 0]
    if not healthy.empty:
        best = healthy.loc[healthy["final_test_mse_mean"].idxmin()]
        lines.append(
            f"Lowest mean test MSE: {best['model']} (d={best['latent_dim']}), "
            f"{best['final_test_mse_mean']:.5f}{_sd(best, 'final_test_mse', '.5f')} over "
            f"{best['seeds']} seed{'s' if best['seeds'] > 1 else ''} "
            f"({best['psnr_db_mean']:.1f} dB PSNR)."
        )
    lines += _conv_lines(configs) + health_lines(report, configs, floors)
    linear = configs[configs["kind"] == "linear"]
    lines += [
        f"{row.model} reaches {row.ratio_to_pca:.3f}x its optimum, the uncentered PCA floor "
        f"for k={row.latent_dim} ({row.final_test_mse_mean:.5f} vs {row.pca_floor:.5f})."
        for row in linear.itertuples()
    ] or ["No linear baseline among the compared runs."]
    return lines + [_clusters(report, labelled), *_host_lines(report)]


def _sd(row: pd.Series, metric: str, fmt: str) -> str:
    sd = row[f"{metric}_std"]
    return "" if pd.isna(sd) else f" ± {format(sd, fmt)}"


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


def _conv_lines(configs: pd.DataFrame) -> list[str]:
    """How the mean gap and the distance to the PCA floor change with d."""
    conv = configs[configs["kind"] == "conv"].set_index("latent_dim")
    if conv.empty:
        return []
    gap, ratio = conv["gap_mean"], conv["ratio_to_pca"].dropna()
    lines = [
        f"Generalization gap of the conv models (mean over seeds): {_series(gap, '+.2e')}; "
        f"{_trend(gap)}."
    ]
    if len(ratio):
        lines.append(
            f"Conv mean test MSE over the PCA floor of the same k: {_series(ratio, '.2f')}."
        )
    return lines


def _restart_phrase(row: pd.Series) -> str:
    reasons = [
        f"{row[column]} {what}"
        for column, what in (
            ("restarts_constant", "constant output"),
            ("restarts_plateau", "stuck at the all-black loss"),
        )
        if row[column]
    ]
    return f"{row['model']} {row['restarts']} ({', '.join(reasons)})"


def health_lines(report: pd.DataFrame, configs: pd.DataFrame, floors: PcaFloors) -> list[str]:
    """Restarts and why, recorded epochs at the all-black loss, collapsed final models.
    "No model collapsed" only when none of these happened in any run's history."""
    lines = []
    restarted = configs[configs["restarts"] > 0]
    if len(restarted):
        lines.append(
            "Initialisations replaced by the health check before training (restarts, over "
            "all seeds): " + "; ".join(_restart_phrase(r) for _, r in restarted.iterrows()) + "."
        )
    stalled = report[report["stalled_epochs"] != ""]
    if len(stalled):
        lines.append(
            "Recorded epochs at the all-black loss: "
            + "; ".join(f"{r.model} epochs {r.stalled_epochs}" for r in stalled.itertuples())
            + "."
        )
    collapsed = report[report["collapsed"]]
    if len(collapsed):
        lines.append("Collapsed to a constant output: " + ", ".join(collapsed["model"]) + ".")
    if not (len(restarted) or len(stalled) or len(collapsed)):
        lines.append(
            "No model collapsed: no initialisation was restarted, no recorded epoch sat at "
            "the all-black loss, and every final model's output varies with its input."
        )
    mean_image = floors.floor(0, centered=True)
    weak = report[~report["collapsed"] & (report["final_test_mse"] >= mean_image)]
    if len(weak):
        lines.append(
            f"No better than the mean training image (test MSE {mean_image:.5f}), though not "
            "collapsed: " + ", ".join(weak["model"]) + "."
        )
    return lines


def _clusters(report: pd.DataFrame, labelled: bool) -> str:
    if not labelled:
        return "The images have no classes: the latent codes' clusters by class do not apply."
    sil, knn = report["silhouette"].dropna(), report["knn5_accuracy"].dropna()
    if sil.empty or knn.empty:
        return "Latent quality was not logged by these runs."
    verdict = "no" if sil.max() < SILHOUETTE_STRUCTURE else "some"
    return (
        f"Latent codes: silhouette by class {sil.min():.3f} to {sil.max():.3f} ({verdict} "
        f"substantial cluster structure; below {SILHOUETTE_STRUCTURE} reads as none), while "
        f"5-NN class accuracy is {knn.min():.1%} to {knn.max():.1%}."
    )


def _host_lines(report: pd.DataFrame) -> list[str]:
    hosts = report["host"].value_counts()
    lines = [
        "Hosts of these runs: "
        + "; ".join(f"{host} ({n} run{'s' if n > 1 else ''})" for host, n in hosts.items())
        + "."
    ]
    if len(hosts) > 1:
        lines.append(
            "The runs come from more than one host: float32 results differ slightly between "
            "instruction sets, so compare configurations by their seed means and spread."
        )
    return lines
