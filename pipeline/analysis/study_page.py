"""study.html: the whole study on one page that works offline, with one copy of plotly.js.

It holds the question and the recommendation, the per-configuration table and the
observations, the central figure and the loss curves (interactive), the reconstruction
grid, the latent explorer (3D test codes; hovering a point shows that test digit and the
selected model's reconstruction of it) and the interpolations. Pure: returns the HTML.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from pipeline.analysis.plots import latent_scatter_3d
from pipeline.analysis.render import STYLE, ReportDoc, config_table, sections
from pipeline.analysis.sprites import COLUMNS, TILE, sprite_sheet

QUESTION = "How much does an autoencoder's code size buy in reconstruction quality?"
INTRO = (
    "The same convolutional autoencoder is trained on MNIST at several latent sizes d, beside "
    "a bias-free linear autoencoder (the PCA baseline), each from one or more seeds; the "
    "table and the figures below come from the tracked runs."
)
WALKS = (
    "<p>Each row decodes 10 evenly spaced points on the straight line from the code of one "
    "test digit to another's, in each configuration's best seed: what the latent space "
    "holds between two digits.</p>"
)
THUMB_SCALE = 4  # a 28-pixel digit is drawn 112 pixels wide
EXPLORER_HEIGHT = 620  # pixels
PAGE_STYLE = f"""
section {{ max-width: 1250px; }}
.explorer {{ display: flex; gap: 1.5em; align-items: flex-start; }}
#explorer-plot {{ flex: 1; min-width: 0; height: {EXPLORER_HEIGHT}px; }}
.thumbs {{ width: 260px; }} .thumbs figure {{ display: inline-block; margin: 0 0.4em 0.6em 0; }}
.thumb {{ width: {TILE * THUMB_SCALE}px; height: {TILE * THUMB_SCALE}px; background-color: #000;
  background-repeat: no-repeat; image-rendering: pixelated;
  background-size: {COLUMNS * TILE * THUMB_SCALE}px auto; }}
figcaption {{ font-size: 0.85em; text-align: center; }}
.walk {{ display: flex; align-items: center; gap: 1em; margin: 2px 0; }}
.walk span {{ width: 10em; text-align: right; font-size: 0.9em; }}
.walk img {{ height: {TILE * 3}px; image-rendering: pixelated; }}
"""
EXPLORER_SCRIPT = """
(() => {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const plot = document.getElementById("explorer-plot");
  const select = document.getElementById("explorer-model");
  const digit = document.getElementById("explorer-digit");
  const rebuilt = document.getElementById("explorer-reconstruction");
  const caption = document.getElementById("explorer-caption");
  let index = 0;
  const cut = (tile, i) => {
    const x = (i % data.columns) * data.size, y = Math.floor(i / data.columns) * data.size;
    tile.style.backgroundPosition = `-${x}px -${y}px`;
  };
  const point = (i) => {
    index = i;
    cut(digit, i);
    cut(rebuilt, i);
    const model = data.models[select.value].label;
    caption.textContent = `Test digit ${i}, a ${data.labels[i]}: as written (left) and ` +
      `as ${model} reconstructs it (right).`;
  };
  const show = () => {
    const figure = data.models[select.value].figure;
    rebuilt.className = `thumb sprite-${select.value}`;
    Plotly.react(plot, figure.data, figure.layout, {responsive: true});
    point(index);
  };
  const start = () => {
    show();
    plot.on("plotly_hover", (event) => point(event.points[0].customdata));
  };
  select.addEventListener("change", show);
  point(index);
  // The 3D scene is the page's slowest part to draw: draw it once it scrolls into view.
  if (!("IntersectionObserver" in window)) return start();
  const seen = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) {
      seen.disconnect();
      start();
    }
  });
  seen.observe(plot);
})();
"""


@dataclass(frozen=True)
class ExplorerModel:
    label: str
    """The configuration, e.g. "conv-d3"."""
    title: str
    points: np.ndarray
    """The explored test digits' codes in 3D, (n, 3)."""
    reconstructions: np.ndarray
    """Its reconstructions of those digits, (n, 28, 28) in [0, 1]."""
    own_codes: bool
    """The points are the codes themselves (d <= 3), not a PCA projection."""


@dataclass(frozen=True)
class StudyFigures:
    tradeoff: go.Figure
    loss_curves: go.Figure
    reconstructions: bytes
    """The reconstruction grid, PNG bytes."""
    walks: dict[str, np.ndarray]
    """ "conv-d3: 1 to 7" -> the images decoded from one test code to the other, (steps,
    28, 28) in [0, 1]."""
    digits: np.ndarray
    """The explored test digits, (n, 28, 28) in [0, 1]."""
    labels: np.ndarray
    explorer: list[ExplorerModel]


def _png(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _walks(walks: dict[str, np.ndarray]) -> str:
    """One row per walk: its label, then its steps as one strip of raw pixels (lighter
    than a plotted figure)."""
    rows = "".join(
        f'<div class="walk"><span>{html.escape(label)}</span>'
        f"{_png(sprite_sheet(steps, columns=len(steps)), label)}</div>"
        for label, steps in walks.items()
    )
    return f'<div class="walks">{rows}</div>'


def _section(anchor: str, heading: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>{"".join(parts)}</section>'


def _items(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def _results(doc: ReportDoc) -> list[str]:
    rec, esc = doc.recommendation, html.escape
    question = [
        f"<p><strong>{esc(QUESTION)}</strong> {esc(INTRO)} Compared: {esc(doc.source)}.</p>",
        f"<p><strong>Recommended: {esc(rec.model)}.</strong> {esc(rec.why)}</p>",
    ]
    listed = [f"<h3>{esc(heading)}</h3>{_items(lines)}" for heading, lines in sections(doc)]
    table = config_table(doc.configs).to_html(index=False, border=0)
    return [
        _section("question", "The question and the answer", *question),
        _section("results", "By configuration: means over seeds, ± their sample SD", table),
        _section("observations", "Observations and recommendation", *listed),
    ]


def _figure(fig: go.Figure, div_id: str) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id)


def _explorer_data(figures: StudyFigures) -> str:
    """The explorer's JSON: each model's 3D figure, the digits' labels, the tile size."""
    models = []
    for m in figures.explorer:
        fig = latent_scatter_3d(m.points, figures.labels, m.title)
        fig.update_layout(height=EXPLORER_HEIGHT, margin={"l": 0, "r": 0, "b": 0, "t": 40})
        models.append({"label": m.label, "figure": json.loads(pio.to_json(fig))})
    data = {"columns": COLUMNS, "size": TILE * THUMB_SCALE, "labels": figures.labels.tolist()}
    return json.dumps({**data, "models": models}).replace("</", "<\\/")


def _sprite_styles(figures: StudyFigures) -> str:
    """One CSS class per sprite sheet: the digits, then each model's reconstructions."""
    sheets = {"originals": figures.digits}
    sheets |= {str(i): m.reconstructions for i, m in enumerate(figures.explorer)}
    return "".join(
        f".sprite-{name} {{ background-image: url(data:image/png;base64,"
        f"{base64.b64encode(sprite_sheet(images)).decode('ascii')}); }}"
        for name, images in sheets.items()
    )


def _explorer(figures: StudyFigures) -> str:
    options = "".join(
        f'<option value="{i}">{html.escape(m.label)}: '
        f"{'its own 3D codes' if m.own_codes else '3D PCA projection of its codes'}</option>"
        for i, m in enumerate(figures.explorer)
    )
    return (
        f"<style>{_sprite_styles(figures)}</style>"
        f"<p>The first {len(figures.labels):,} test digits' codes, coloured by digit. Hover "
        "over a point to see that digit and its reconstruction by the selected model.</p>"
        f'<label>Model <select id="explorer-model">{options}</select></label>'
        '<div class="explorer"><div id="explorer-plot"></div><div class="thumbs">'
        '<figure><div id="explorer-digit" class="thumb sprite-originals"></div>'
        "<figcaption>test digit</figcaption></figure>"
        '<figure><div id="explorer-reconstruction" class="thumb"></div>'
        '<figcaption>reconstruction</figcaption></figure><p id="explorer-caption"></p></div></div>'
        f'<script type="application/json" id="explorer-data">{_explorer_data(figures)}</script>'
        f"<script>{EXPLORER_SCRIPT}</script>"
    )


def study_page(doc: ReportDoc, figures: StudyFigures) -> str:
    """The page, with nothing fetched from outside it: plotly.js, styles, data and
    images are all inside."""
    body = [
        f"<h1>{html.escape(doc.title)}</h1>",
        *_results(doc),
        _section(
            "central-figure",
            "Test MSE and parameters against latent size",
            _figure(figures.tradeoff, "central-figure-plot"),
        ),
        _section("loss-curves", "Loss curves", _figure(figures.loss_curves, "loss-curves-plot")),
        _section(
            "reconstructions", "Reconstructions", _png(figures.reconstructions, "reconstructions")
        ),
        _section("explorer", "Latent explorer", _explorer(figures)),
        _section("interpolations", "Interpolations", WALKS, _walks(figures.walks)),
    ]
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(doc.title)}</title>'
        f"<style>{STYLE}{PAGE_STYLE}</style><script>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(body)}</body></html>"
    )
