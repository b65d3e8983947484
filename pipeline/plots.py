"""The comparison's figures. Pure: each function returns a figure (or its bytes/HTML
text); only the entry point writes files.

matplotlib figures are built on ``matplotlib.figure.Figure`` (no pyplot, no global state,
no display needed); plotly figures are ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from plotly.colors import qualitative

from pipeline.images import reconstruction_grid

DIGIT_COLOURS = qualitative.D3  # ten colours, one per digit
MODEL_COLOURS = qualitative.D3 + qualitative.Dark24
MAX_LEGEND = 12  # more models than this: the PNG drops its legend (the HTML page keeps one)


def _by_label(curves: pd.DataFrame):
    """(label, colour, rows) per model, in order of first appearance."""
    for i, (label, rows) in enumerate(curves.groupby("label", sort=False)):
        yield label, MODEL_COLOURS[i % len(MODEL_COLOURS)], rows.sort_values("epoch")


def loss_curves_png(curves: pd.DataFrame) -> Figure:
    """Train (dashed) and test (solid) MSE per epoch, one colour per model, log scale.

    `curves`: one row per (model, epoch) with columns label, epoch, train_mse, test_mse.
    """
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for label, colour, rows in _by_label(curves):
        ax.plot(rows["epoch"], rows["test_mse"], "-o", color=colour, ms=3, label=f"{label} test")
        ax.plot(rows["epoch"], rows["train_mse"], "--", color=colour, label=f"{label} train")
    ax.set(xlabel="epoch", ylabel="MSE per pixel", yscale="log", title="Train and test loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    if curves["label"].nunique() <= MAX_LEGEND:
        ax.legend(fontsize="small", ncols=2, loc="upper right")
    return fig


def loss_curves_plotly(curves: pd.DataFrame) -> go.Figure:
    """The same curves, interactive: clicking a model in the legend hides both its lines."""
    fig = go.Figure()
    for label, colour, rows in _by_label(curves):
        for split, dash in (("test", "solid"), ("train", "dash")):
            fig.add_scatter(
                x=rows["epoch"],
                y=rows[f"{split}_mse"],
                name=f"{label} {split}",
                legendgroup=label,
                line={"color": colour, "dash": dash},
                mode="lines+markers" if split == "test" else "lines",
            )
    fig.update_layout(title="Train and test loss", xaxis_title="epoch", yaxis_title="MSE")
    fig.update_yaxes(type="log")
    return fig


def reconstruction_figure(originals: np.ndarray, rows: dict[str, np.ndarray]) -> Figure:
    """The same test digits: originals on top, then one row per model (label -> images
    (n, 28, 28) in [0, 1])."""
    labels = ["original", *rows]
    grid = reconstruction_grid([originals, *rows.values()])
    fig = Figure(figsize=(grid.shape[1] / 60 + 1.5, grid.shape[0] / 60), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    step = grid.shape[0] / len(labels)
    ax.set_yticks([step * (i + 0.5) for i in range(len(labels))], labels)
    ax.set_xticks([])
    ax.set_title("Reconstructions of the same test digits")
    return fig


def latent_scatter_3d(points: np.ndarray, labels: np.ndarray, title: str) -> go.Figure:
    """Ten 3D scatter traces, one per digit (legend), hover showing digit and test index.

    `points`: (n, 3) coordinates, `labels`: (n,) digits; the index shown is the row.
    """
    fig = go.Figure()
    axes = ("x", "y", "z")
    for digit in range(10):
        index = np.flatnonzero(labels == digit)
        fig.add_scatter3d(
            **{axis: points[index, i] for i, axis in enumerate(axes)},
            customdata=index,
            mode="markers",
            name=f"digit {digit}",
            marker={"size": 2, "color": DIGIT_COLOURS[digit]},
            hovertemplate=f"digit {digit}<br>index %{{customdata}}<extra></extra>",
        )
    fig.update_layout(title=title, legend={"itemsizing": "constant"}, height=700)
    return fig


def standalone_html(fig: go.Figure) -> str:
    """A full HTML page with plotly.js inside: it works offline (no CDN)."""
    return pio.to_html(fig, full_html=True, include_plotlyjs=True)


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
