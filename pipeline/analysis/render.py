"""The comparison report as text: a Markdown file, one self-contained HTML page, a console
table. Pure: each function returns a string; the entry point writes the files."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.analysis.spread import Recommendation

# Per-run report column -> (header, format); the CSV keeps every column at full precision.
DISPLAY = {
    "model": ("model", "{}"),
    "seed": ("seed", "{}"),
    "latent_dim": ("d", "{}"),
    "compression_ratio": ("pixels/d", "{:.1f}"),
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
    "restarts": ("restarts", "{}"),
    "collapsed": ("collapsed", "{}"),
}
# Per-configuration columns: (header, column, format, column of its sample SD or None).
CONFIG_DISPLAY = [
    ("model", "model", "{}", None),
    ("d", "latent_dim", "{}", None),
    ("seeds", "seeds", "{}", None),
    ("pixels/d", "compression_ratio", "{:.1f}", None),
    ("params", "params_total", "{:,}", None),
    ("test MSE", "final_test_mse_mean", "{:.5f}", "final_test_mse_std"),
    ("min", "final_test_mse_min", "{:.5f}", None),
    ("max", "final_test_mse_max", "{:.5f}", None),
    ("gap", "gap_mean", "{:+.2e}", "gap_std"),
    ("PSNR dB", "psnr_db_mean", "{:.2f}", "psnr_db_std"),
    ("x floor", "ratio_to_pca", "{:.2f}", None),
    ("5-NN acc", "knn5_accuracy_mean", "{:.1%}", "knn5_accuracy_std"),
    ("restarts", "restarts", "{}", None),
    ("collapsed", "collapsed_runs", "{}", None),
]


@dataclass
class ReportDoc:
    title: str
    source: str
    """Which runs were compared, in words."""
    report: pd.DataFrame
    """Per run (pipeline.analysis.report.summarize)."""
    configs: pd.DataFrame
    """Per configuration, over its seeds (pipeline.analysis.spread.aggregate)."""
    observations: list[str]
    recommendation: Recommendation
    excluded: pd.DataFrame
    """run_id, run_name, status, reason: the runs left out (tracking.query.RunSet)."""
    notes: list[str] = field(default_factory=list)
    champion: str = ""
    """Where the pick is registered, e.g. "mnist-autoencoder version 3, alias champion"."""
    images: dict[str, bytes] = field(default_factory=dict)
    """PNG bytes by caption, embedded in the HTML page."""
    dataset: str = ""
    """The compared runs' dataset (ImageData.name), e.g. "fashion-mnist"."""


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


def _with_sd(value: object, sd: object, fmt: str) -> str:
    cell = _cell(value, fmt)
    if sd is None or pd.isna(sd):
        return cell
    return f"{cell} ± {_cell(abs(sd), fmt.replace('+', ''))}"


def config_table(configs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: means with their sample SD over seeds ("± sd"; none with one
    seed), min and max of the test MSE."""
    return pd.DataFrame(
        {
            header: [
                _with_sd(row[column], row[sd] if sd else None, fmt) for _, row in configs.iterrows()
            ]
            for header, column, fmt, sd in CONFIG_DISPLAY
        }
    )


# The per-configuration columns of the short summaries (console, run descriptions).
SUMMARY_COLUMNS = ["model", "d", "seeds", "params", "test MSE", "min", "max", "PSNR dB", "x floor"]
CONFIG_CAPTION = "By configuration: means over seeds, ± their sample standard deviation"
RUNS_CAPTION = "Every run"


def _excluded_lines(excluded: pd.DataFrame) -> list[str]:
    """One line per run left out: name, id, status and, where recorded, why."""
    return [
        f"{r.run_name} ({r.run_id}): {r.status}" + (f" ({r.reason})" if r.reason else "")
        for r in excluded.itertuples()
    ]


def sections(doc: ReportDoc) -> list[tuple[str, list[str]]]:
    """(heading, lines) of the observations, the recommendation and the excluded runs."""
    rec = doc.recommendation
    pick = f"{rec.model} ({doc.champion})" if doc.champion else rec.model
    return [
        ("Observations", doc.observations + doc.notes),
        (
            "Recommendation",
            [f"Rule: {rec.rule}", f"Pick: {pick}.", f"Why: {rec.why}", f"Spread: {rec.spread}"],
        ),
        ("Excluded runs", _excluded_lines(doc.excluded) or ["None: every training run finished."]),
    ]


def to_markdown(doc: ReportDoc) -> str:
    parts = [f"# {doc.title}", "", f"Compared: {doc.source}.", "", f"## {CONFIG_CAPTION}", ""]
    parts += [config_table(doc.configs).to_markdown(index=False, disable_numparse=True), ""]
    parts += [f"## {RUNS_CAPTION}", ""]
    parts += [display_table(doc.report).to_markdown(index=False, disable_numparse=True), ""]
    for heading, lines in sections(doc):
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
    body.append(f"<h2>{esc(CONFIG_CAPTION)}</h2>")
    body.append(config_table(doc.configs).to_html(index=False, border=0))
    body.append(f"<h2>{esc(RUNS_CAPTION)}</h2>")
    body.append(display_table(doc.report).to_html(index=False, border=0))
    for heading, lines in sections(doc):
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
    lines = [doc.title, config_table(doc.configs)[SUMMARY_COLUMNS].to_string(index=False), ""]
    lines += [f"recommended: {doc.recommendation.model} ({doc.recommendation.why})"]
    lines += [f"spread: {doc.recommendation.spread}"]
    lines += [f"excluded: {line}" for line in _excluded_lines(doc.excluded)]
    return "\n".join(lines + doc.notes)


def to_description(doc: ReportDoc) -> str:
    """The table and the recommendation in Markdown, short enough for a run's
    Description in the MLflow UI; the full report is report.html."""
    lines = [
        f"**{doc.title}**: {doc.source}.",
        "",
        config_table(doc.configs)[SUMMARY_COLUMNS].to_markdown(index=False, disable_numparse=True),
        "",
        f"**Recommended: {doc.recommendation.model}.** {doc.recommendation.why}",
        "",
        f"Spread: {doc.recommendation.spread}",
    ]
    if doc.champion:
        lines += ["", f"Champion: {doc.champion}."]
    if len(doc.excluded):
        lines += ["", "Excluded (not FINISHED):", ""]
        lines += [f"- {line}" for line in _excluded_lines(doc.excluded)]
    lines += ["", "The full report, with its figures, is `report.html` in Artifacts."]
    return "\n".join(lines)
