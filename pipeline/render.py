"""The comparison report as text: a Markdown file, one self-contained HTML page, a console
table. Pure: each function returns a string; the entry point writes the files."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.report import Recommendation

# Report column -> (header, format); the CSV keeps every column at full precision.
DISPLAY = {
    "model": ("model", "{}"),
    "latent_dim": ("d", "{}"),
    "compression_ratio": ("784/d", "{:.1f}"),
    "params_total": ("params", "{:,}"),
    "params_encoder": ("encoder", "{:,}"),
    "params_decoder": ("decoder", "{:,}"),
    "final_train_mse": ("train MSE", "{:.5f}"),
    "final_test_mse": ("test MSE", "{:.5f}"),
    "gap": ("gap", "{:+.2e}"),
    "relative_gap": ("gap %", "{:+.1%}"),
    "best_test_mse": ("best test", "{:.5f}"),
    "best_epoch": ("at epoch", "{}"),
    "gap_widening_from": ("widening from", "{}"),
    "psnr_db": ("PSNR dB", "{:.1f}"),
    "train_seconds": ("train s", "{:.0f}"),
    "pca_floor": ("PCA floor", "{:.5f}"),
    "ratio_to_pca": ("x floor", "{:.2f}"),
    "knn5_accuracy": ("5-NN acc", "{:.1%}"),
    "silhouette": ("silhouette", "{:.3f}"),
    "collapsed": ("collapsed", "{}"),
}


@dataclass
class ReportDoc:
    title: str
    source: str
    """Which runs were compared, in words."""
    report: pd.DataFrame
    observations: list[str]
    recommendation: Recommendation
    excluded: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    champion: str = ""
    """Where the pick is registered, e.g. "mnist-autoencoder version 3, alias champion"."""
    images: dict[str, bytes] = field(default_factory=dict)
    """PNG bytes by caption, embedded in the HTML page."""


def _cell(value: object, fmt: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "none" if fmt == "{}" else "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return fmt.format(value)


def display_table(report: pd.DataFrame) -> pd.DataFrame:
    """The report's columns as formatted strings, with short headers."""
    return pd.DataFrame(
        {
            header: [_cell(v, fmt) for v in report[column]]
            for column, (header, fmt) in DISPLAY.items()
        }
    )


def _excluded_lines(excluded: pd.DataFrame) -> list[str]:
    return [f"{r.run_name} ({r.run_id}): {r.status}" for r in excluded.itertuples()]


def _sections(doc: ReportDoc) -> list[tuple[str, list[str]]]:
    rec = doc.recommendation
    pick = f"{rec.model} ({doc.champion})" if doc.champion else rec.model
    return [
        ("Observations", doc.observations + doc.notes),
        ("Recommendation", [f"Rule: {rec.rule}", f"Pick: {pick}.", f"Why: {rec.why}"]),
        ("Excluded runs", _excluded_lines(doc.excluded) or ["None: every training run finished."]),
    ]


def to_markdown(doc: ReportDoc) -> str:
    parts = [f"# {doc.title}", "", f"Compared: {doc.source}.", ""]
    parts += [display_table(doc.report).to_markdown(index=False, disable_numparse=True), ""]
    for heading, lines in _sections(doc):
        parts += [f"## {heading}", "", *(f"- {line}" for line in lines), ""]
    return "\n".join(parts)


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } img { max-width: 100%; }
"""


def to_html(doc: ReportDoc) -> str:
    """One page with no outside references: styles inline, images as data URIs."""
    esc = html.escape
    body = [f"<h1>{esc(doc.title)}</h1>", f"<p>Compared: {esc(doc.source)}.</p>"]
    body.append(display_table(doc.report).to_html(index=False, border=0))
    for heading, lines in _sections(doc):
        items = "".join(f"<li>{esc(line)}</li>" for line in lines)
        body.append(f"<h2>{esc(heading)}</h2><ul>{items}</ul>")
    for caption, png in doc.images.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(
            f'<h2>{esc(caption)}</h2><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
        )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(doc.title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    )


def to_console(doc: ReportDoc) -> str:
    """The table and the recommendation, for the terminal."""
    columns = ["model", "d", "params", "test MSE", "gap %", "PSNR dB", "x floor", "5-NN acc"]
    lines = [doc.title, display_table(doc.report)[columns].to_string(index=False), ""]
    lines += [f"recommended: {doc.recommendation.model} ({doc.recommendation.why})"]
    lines += [f"excluded: {line}" for line in _excluded_lines(doc.excluded)]
    return "\n".join(lines + doc.notes)
