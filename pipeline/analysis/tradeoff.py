"""The study's central figure: test MSE and parameter count against latent size.

Left panel: each conv configuration's mean test MSE with its seed spread (bars from min to
max), the linear baseline, and the analytic floor of any linear code of size k (uncentered
PCA, the bias-free linear autoencoder's optimum) for every k from 1 to the pixel count
D = C*H*W. Right panel: parameters against latent size. Pure: the functions return figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from pipeline.analysis.pca import PcaFloors

Y_BOTTOM = 1e-4  # the floor falls towards 0 as k nears the pixel count; the view stops here
KIND_STYLE = {"conv": ("#1F77B4", "o"), "linear": ("#D62728", "s")}


def floor_name(floors: PcaFloors) -> str:
    return f"PCA floor (uncentered, k = 1..{floors.pixels})"


def floor_curve(floors: PcaFloors) -> tuple[np.ndarray, np.ndarray]:
    """k = 1..D and the floor at each (from one eigendecomposition, pipeline.analysis.pca),
    where it is positive: 0 (exact) is off a log axis, NaN where it was not computed."""
    k = np.arange(1, floors.pixels + 1)
    floor = np.array(floors.uncentered[1:], dtype=float)
    shown = floor > 0
    return k[shown], floor[shown]


def _series(configs: pd.DataFrame, kind: str) -> pd.DataFrame:
    return configs[configs["kind"] == kind].sort_values("latent_dim")


def _label(kind: str, rows: pd.DataFrame) -> str:
    seeds = int(rows["seeds"].max()) if len(rows) else 1
    return f"{kind} (mean; bars: min to max over {seeds} seeds)" if seeds > 1 else kind


def mse_vs_latent_png(configs: pd.DataFrame, floors: PcaFloors) -> Figure:
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    mse_ax, params_ax = fig.subplots(1, 2)
    k, floor = floor_curve(floors)
    mse_ax.plot(k, floor, color="0.5", lw=1.2, label=floor_name(floors))
    for kind, (colour, marker) in KIND_STYLE.items():
        rows = _series(configs, kind)
        if rows.empty:
            continue
        mean = rows["final_test_mse_mean"]
        spread = [mean - rows["final_test_mse_min"], rows["final_test_mse_max"] - mean]
        mse_ax.errorbar(
            rows["latent_dim"], mean, yerr=spread, color=colour, marker=marker, capsize=4,
            label=_label(kind, rows),
        )  # fmt: skip
        params_ax.plot(
            rows["latent_dim"], rows["params_total"].astype(float), marker=marker,
            color=colour, label=f"{kind} parameters",
        )  # fmt: skip
    mse_ax.set(
        xscale="log", yscale="log", xlabel="latent size d", ylabel="test MSE per pixel",
        title="Reconstruction error against latent size", ylim=(Y_BOTTOM, None),
    )  # fmt: skip
    params_ax.set(
        xscale="log", yscale="log", xlabel="latent size d", ylabel="parameters",
        title="Model size against latent size",
    )  # fmt: skip
    for ax in (mse_ax, params_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def mse_vs_latent_plotly(configs: pd.DataFrame, floors: PcaFloors) -> go.Figure:
    """The same two panels, interactive (hover shows each point's numbers)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "Reconstruction error against latent size",
            "Model size against latent size",
        ),
    )
    k, floor = floor_curve(floors)
    fig.add_scatter(
        x=k, y=floor, name=floor_name(floors), mode="lines", line={"color": "gray"},
        row=1, col=1,
    )  # fmt: skip
    for kind, (colour, _) in KIND_STYLE.items():
        rows = _series(configs, kind)
        if rows.empty:
            continue
        mean = rows["final_test_mse_mean"]
        fig.add_scatter(
            x=rows["latent_dim"], y=mean, name=_label(kind, rows), mode="lines+markers",
            line={"color": colour}, text=rows["model"],
            error_y={
                "type": "data", "symmetric": False,
                "array": rows["final_test_mse_max"] - mean,
                "arrayminus": mean - rows["final_test_mse_min"],
            },
            row=1, col=1,
        )  # fmt: skip
        fig.add_scatter(
            x=rows["latent_dim"], y=rows["params_total"].astype(float),
            name=f"{kind} parameters", mode="lines+markers", line={"color": colour, "dash": "dot"},
            text=rows["model"], row=1, col=2,
        )  # fmt: skip
    fig.update_xaxes(type="log", title_text="latent size d")
    fig.update_yaxes(type="log", title_text="test MSE per pixel", row=1, col=1)
    fig.update_yaxes(type="log", title_text="parameters", row=1, col=2)
    fig.update_yaxes(range=[np.log10(Y_BOTTOM), np.log10(0.2)], row=1, col=1)
    fig.update_layout(title="Latent size: reconstruction error and model size", height=550)
    return fig
