"""The cross-dataset answer: for each dataset compared, its recommended latent size and the
smallest latent size whose mean test PSNR reaches a target, in one table; and every
dataset's test MSE and PSNR against latent size, each beside its PCA floor, in one figure.
Pure: frames and figures out.

PSNR is 10 log10(1 / MSE) for pixels in [0, 1] (pipeline.analysis.report.psnr).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from pipeline.analysis.pca import PcaFloors
from pipeline.analysis.plots import MODEL_COLOURS
from pipeline.analysis.render import ReportDoc
from pipeline.analysis.tradeoff import Y_BOTTOM, floor_curve

Study = tuple[ReportDoc, PcaFloors]
"""One dataset's comparison: its report (doc.dataset names it) and its PCA floors."""
KIND_DASH = {"conv": ("solid", "-", "o"), "linear": ("dot", ":", "s")}
TITLE = "Every dataset: test error against latent size"


def reaching(configs: pd.DataFrame, psnr_target: float) -> pd.Series | None:
    """The configuration of smallest latent size whose mean test PSNR over its seeds is at
    least psnr_target dB, among those none of whose seeds collapsed (the lower mean MSE at
    equal size); None if none reaches it."""
    healthy = configs[(configs["collapsed_runs"] == 0) & (configs["psnr_db_mean"] >= psnr_target)]
    if healthy.empty:
        return None
    return healthy.sort_values(["latent_dim", "final_test_mse_mean"], kind="stable").iloc[0]


def pca_reaching(floors: PcaFloors, psnr_target: float) -> int | None:
    """The fewest uncentered PCA components whose floor reaches psnr_target dB: what any
    linear code needs; None where the floors were not computed or never reach it."""
    most = 10 ** (-psnr_target / 10)
    found = [k for k, floor in enumerate(floors.uncentered) if floor <= most]
    return found[0] if found else None


def across_table(studies: list[Study], psnr_target: float) -> pd.DataFrame:
    """One row per dataset: its pixel count, recommended configuration (latent size, mean
    test MSE, PSNR), and the smallest one reaching psnr_target (and the PCA floor's k)."""
    rows = []
    for doc, floors in studies:
        configs, rec = doc.configs, doc.recommendation
        pick = configs.set_index("model").loc[rec.model]
        reached = reaching(configs, psnr_target)
        rows.append(
            {
                "dataset": doc.dataset,
                "pixels": floors.pixels,
                "recommended": rec.model,
                "recommended_d": rec.latent_dim,
                "recommended_test_mse": pick["final_test_mse_mean"],
                "recommended_psnr_db": pick["psnr_db_mean"],
                "psnr_target_db": psnr_target,
                "reaching": None if reached is None else reached["model"],
                "reaching_d": pd.NA if reached is None else int(reached["latent_dim"]),
                "reaching_psnr_db": math.nan if reached is None else reached["psnr_db_mean"],
                "pca_k_reaching": pd.NA if (k := pca_reaching(floors, psnr_target)) is None else k,
            }
        )
    return pd.DataFrame(rows).astype({"reaching_d": "Int64", "pca_k_reaching": "Int64"})


def _cell(value: object, fmt: str) -> str:
    return "none" if value is None or pd.isna(value) else fmt.format(value)


def across_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as formatted strings, with headers that state the target."""
    target = f"{table['psnr_target_db'].iloc[0]:g} dB" if len(table) else "the target"
    columns = {
        "dataset": ("dataset", "{}"),
        "pixels": ("pixels", "{:,}"),
        "recommended": ("recommended", "{}"),
        "recommended_test_mse": ("its test MSE", "{:.5f}"),
        "recommended_psnr_db": ("its PSNR dB", "{:.1f}"),
        "reaching": (f"smallest reaching {target}", "{}"),
        "reaching_psnr_db": ("its PSNR dB ", "{:.1f}"),
        "pca_k_reaching": (f"PCA k reaching {target}", "{}"),
    }
    return pd.DataFrame(
        {
            header: [_cell(v, fmt) for v in table[column]]
            for column, (header, fmt) in columns.items()
        }
    )


def _series(doc: ReportDoc):
    """(kind, rows) of the doc's configurations, by kind, sorted by latent size."""
    for kind, rows in doc.configs.groupby("kind", sort=True):
        yield str(kind), rows.sort_values("latent_dim")


def _psnr(mse) -> np.ndarray:
    return 10 * np.log10(1 / np.asarray(mse, dtype=float))


def _floor(floors: PcaFloors) -> tuple[np.ndarray, np.ndarray]:
    """The floor curve down to Y_BOTTOM (40 dB): below, it heads for exact reconstruction."""
    k, floor = floor_curve(floors)
    return k[floor >= Y_BOTTOM], floor[floor >= Y_BOTTOM]


def across_plotly(studies: list[Study], psnr_target: float) -> go.Figure:
    """Test MSE (left) and PSNR (right) against latent size: each dataset's mean over
    seeds per model kind in its own colour, its PCA floor dashed in the same colour, and
    the PSNR target."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test MSE per pixel", "Test PSNR (dB)"))
    for i, (doc, floors) in enumerate(studies):
        colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
        for kind, rows in _series(doc):
            dash = KIND_DASH.get(kind, KIND_DASH["conv"])[0]
            mse = rows["final_test_mse_mean"]
            for col, y in ((1, mse), (2, rows["psnr_db_mean"])):
                fig.add_scatter(
                    x=rows["latent_dim"], y=y, name=f"{doc.dataset} {kind}", text=rows["model"],
                    mode="lines+markers", line={"color": colour, "dash": dash},
                    legendgroup=doc.dataset, showlegend=col == 1, row=1, col=col,
                )  # fmt: skip
        k, floor = _floor(floors)
        for col, y in ((1, floor), (2, _psnr(floor))):
            fig.add_scatter(
                x=k, y=y, name=f"{doc.dataset} PCA floor", mode="lines", legendgroup=doc.dataset,
                line={"color": colour, "dash": "dash", "width": 1}, showlegend=col == 1,
                row=1, col=col,
            )  # fmt: skip
    fig.add_hline(y=psnr_target, line={"color": "gray", "dash": "dot"}, row=1, col=2)
    fig.update_xaxes(type="log", title_text="latent size d")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(title=f"{TITLE} (target {psnr_target:g} dB)", height=550)
    return fig


def across_png(studies: list[Study], psnr_target: float) -> Figure:
    """The same two panels as a static figure."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    mse_ax, psnr_ax = fig.subplots(1, 2)
    for i, (doc, floors) in enumerate(studies):
        colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
        for kind, rows in _series(doc):
            _, line, marker = KIND_DASH.get(kind, KIND_DASH["conv"])
            style = {
                "color": colour,
                "ls": line,
                "marker": marker,
                "label": f"{doc.dataset} {kind}",
            }
            mse_ax.plot(rows["latent_dim"], rows["final_test_mse_mean"], **style)
            psnr_ax.plot(rows["latent_dim"], rows["psnr_db_mean"], **style)
        k, floor = _floor(floors)
        floor_style = {"color": colour, "ls": "--", "lw": 0.8, "label": f"{doc.dataset} PCA floor"}
        mse_ax.plot(k, floor, **floor_style)
        psnr_ax.plot(k, _psnr(floor), **floor_style)
    psnr_ax.axhline(psnr_target, color="0.5", ls=":", label=f"target {psnr_target:g} dB")
    mse_ax.set(xscale="log", yscale="log", xlabel="latent size d", ylabel="test MSE per pixel")
    psnr_ax.set(xscale="log", xlabel="latent size d", ylabel="test PSNR (dB)")
    for ax in (mse_ax, psnr_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(TITLE)
    return fig
