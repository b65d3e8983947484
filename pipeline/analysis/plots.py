"""The comparison's figures. Pure: each function returns a figure (or its PNG bytes);
only the entry point writes files.

matplotlib figures are built on ``matplotlib.figure.Figure`` (no pyplot, no global state,
no display needed); plotly figures are ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from plotly.colors import qualitative

from pipeline.analysis.images import reconstruction_grid

MODEL_COLOURS = qualitative.D3 + qualitative.Dark24
CLASS_COLOURS = MODEL_COLOURS  # one per class, cycled beyond 34 classes
MAX_LEGEND = 12  # more models than this: the PNG drops its legend (study.html keeps one)


def _by_label(curves: pd.DataFrame):
    """(label, colour, per-epoch stats) per model, in order of first appearance. The stats
    are the mean, min and max over the label's runs (its seeds) of train_mse and test_mse."""
    for i, (label, rows) in enumerate(curves.groupby("label", sort=False)):
        stats = rows.groupby("epoch")[["train_mse", "test_mse"]].agg(["mean", "min", "max"])
        yield label, MODEL_COLOURS[i % len(MODEL_COLOURS)], stats


def _seed_note(curves: pd.DataFrame) -> str:
    seeds = curves.groupby("label")["run_id"].nunique().max() if "run_id" in curves else 1
    return f" (mean over seeds; band: min to max of {seeds})" if seeds > 1 else ""


def loss_curves_png(curves: pd.DataFrame) -> Figure:
    """Train (dashed) and test (solid) MSE per epoch, one colour per model, log scale; with
    several runs per label, their mean, and a band from their min to their max.

    `curves`: one row per (run, epoch) with columns label, run_id, epoch, train_mse, test_mse.
    """
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for label, colour, stats in _by_label(curves):
        epochs = stats.index
        test, train = stats["test_mse"], stats["train_mse"]
        ax.plot(epochs, test["mean"], "-o", color=colour, ms=3, label=f"{label} test")
        ax.plot(epochs, train["mean"], "--", color=colour, label=f"{label} train")
        if (test["max"] > test["min"]).any():
            ax.fill_between(epochs, test["min"], test["max"], color=colour, alpha=0.2, lw=0)
    title = "Train and test loss" + _seed_note(curves)
    ax.set(xlabel="epoch", ylabel="MSE per pixel", yscale="log", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="both", alpha=0.3)
    if curves["label"].nunique() <= MAX_LEGEND:
        ax.legend(fontsize="small", ncols=2, loc="upper right")
    return fig


def _band(fig: go.Figure, x, low, high, colour: str, label: str) -> None:
    """A filled band from low to high, grouped with label's lines, out of the legend."""
    rgb = colour.lstrip("#")
    fill = "rgba({}, {}, {}, 0.2)".format(*(int(rgb[i : i + 2], 16) for i in (0, 2, 4)))
    common = {"legendgroup": label, "showlegend": False, "hoverinfo": "skip", "mode": "lines"}
    fig.add_scatter(x=x, y=high, name=f"{label} test max", line={"width": 0}, **common)
    fig.add_scatter(
        x=x, y=low, name=f"{label} test min", line={"width": 0}, fill="tonexty",
        fillcolor=fill, **common,
    )  # fmt: skip


def loss_curves_plotly(curves: pd.DataFrame) -> go.Figure:
    """The same curves, interactive: clicking a model in the legend hides its lines and
    band."""
    fig = go.Figure()
    for label, colour, stats in _by_label(curves):
        epochs = list(stats.index)
        for split, dash in (("test", "solid"), ("train", "dash")):
            fig.add_scatter(
                x=epochs,
                y=stats[f"{split}_mse"]["mean"],
                name=f"{label} {split}",
                legendgroup=label,
                line={"color": colour, "dash": dash},
                mode="lines+markers" if split == "test" else "lines",
            )
        test = stats["test_mse"]
        if (test["max"] > test["min"]).any():
            _band(fig, epochs, test["min"], test["max"], colour, label)
    title = "Train and test loss" + _seed_note(curves)
    fig.update_layout(title=title, xaxis_title="epoch", yaxis_title="MSE")
    fig.update_yaxes(type="log")
    return fig


def image_rows_figure(rows: dict[str, np.ndarray], title: str) -> Figure:
    """Rows of images (label -> (n, C, H, W) in [0, 1]), one tiled row per label, labelled
    on the left; grey for one channel, in colour for three."""
    grid = reconstruction_grid(list(rows.values()))
    fig = Figure(figsize=(grid.shape[1] / 60 + 1.5, grid.shape[0] / 60), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")  # RGB: cmap unused
    step = grid.shape[0] / len(rows)
    ax.set_yticks([step * (i + 0.5) for i in range(len(rows))], list(rows))
    ax.set_xticks([])
    ax.set_title(title)
    return fig


def reconstruction_figure(originals: np.ndarray, rows: dict[str, np.ndarray]) -> Figure:
    """The same test images: originals on top, then one row per model (label -> images
    (n, C, H, W) in [0, 1])."""
    return image_rows_figure(
        {"original": originals, **rows}, "Reconstructions of the same test images"
    )


def interpolations_figure(rows: dict[str, np.ndarray]) -> Figure:
    """One row per (model, pair of test images): the decoded steps from one image's code
    to the other's (label -> (steps, C, H, W) in [0, 1])."""
    return image_rows_figure(rows, "Decoded along the straight line between two test codes")


def class_name(classes: tuple[str, ...], label: int) -> str:
    """A label's class name; "class 3" beyond the names known."""
    return classes[label] if 0 <= label < len(classes) else f"class {label}"


def latent_scatter_3d(
    points: np.ndarray, labels: np.ndarray, title: str, classes: tuple[str, ...] = ()
) -> go.Figure:
    """One 3D scatter trace per class present (legend: its name), hover showing the class
    and test index; data without classes is one trace, "test images".

    `points`: (n, 3) coordinates, `labels`: (n,) labels; the index shown (customdata) is
    the row.
    """
    fig = go.Figure()
    axes = ("x", "y", "z")
    for label in np.unique(labels) if classes else [None]:
        index = np.arange(len(labels)) if label is None else np.flatnonzero(labels == label)
        name = "test images" if label is None else class_name(classes, int(label))
        fig.add_scatter3d(
            **{axis: points[index, i] for i, axis in enumerate(axes)},
            customdata=index,
            mode="markers",
            name=name,
            marker={"size": 3, "color": CLASS_COLOURS[int(label or 0) % len(CLASS_COLOURS)]},
            hovertemplate=f"{name}<br>index %{{customdata}}<extra></extra>",
        )
    fig.update_layout(title=title, legend={"itemsizing": "constant"}, height=700)
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
