"""study.html: the whole study on one page that works offline, with one copy of plotly.js.

It holds the question and the recommendation, the per-configuration table and the
observations, the central figure and the loss curves (interactive), the reconstruction
grid, the latent explorer (3D test codes; hovering a point shows that test image and the
selected model's reconstruction of it) and the interpolations. With several datasets, the
page opens on the cross-dataset answer and holds all of that once per dataset.
Pure: returns the HTML.
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
from pipeline.analysis.sprites import COLUMNS, sprite_sheet

QUESTION = "How much does an autoencoder's code size buy in reconstruction quality?"
WALKS = (
    "<p>Each row decodes 10 evenly spaced points on the straight line from the code of one "
    "test image to another's, in each configuration's best seed: what the latent space "
    "holds between two images.</p>"
)
THUMB_PIXELS = 112  # a thumbnail's side: a 28-pixel image is drawn 4 times its size
EXPLORER_HEIGHT = 620  # pixels
PAGE_STYLE = f"""
section {{ max-width: 1250px; }}
section.dataset {{ border-top: 3px solid #888; margin-top: 2em; }}
.explorer {{ display: flex; gap: 1.5em; align-items: flex-start; }}
.explorer-plot {{ flex: 1; min-width: 0; height: {EXPLORER_HEIGHT}px; }}
.thumbs {{ width: 260px; }} .thumbs figure {{ display: inline-block; margin: 0 0.4em 0.6em 0; }}
.thumb {{ background-color: #000; background-repeat: no-repeat; image-rendering: pixelated; }}
figcaption {{ font-size: 0.85em; text-align: center; }}
.walk {{ display: flex; align-items: center; gap: 1em; margin: 2px 0; }}
.walk span {{ width: 12em; text-align: right; font-size: 0.9em; }}
.walk img {{ height: 84px; image-rendering: pixelated; }}
"""
# One function a page; each dataset's explorer calls it with the prefix of its element ids.
EXPLORER_SCRIPT = """
function explorer(prefix) {
  const $ = (id) => document.getElementById(prefix + id);
  const data = JSON.parse($("explorer-data").textContent);
  const plot = $("explorer-plot"), select = $("explorer-model");
  const image = $("explorer-image"), rebuilt = $("explorer-reconstruction");
  const caption = $("explorer-caption");
  let index = 0;
  const cut = (tile, i) => {
    const x = (i % data.columns) * data.width, y = Math.floor(i / data.columns) * data.height;
    tile.style.backgroundPosition = `-${x}px -${y}px`;
  };
  const named = (i) => {
    const label = data.labels[i];
    if (!data.classes.length) return "";
    return `, class ${label < data.classes.length ? data.classes[label] : label}`;
  };
  const point = (i) => {
    index = i;
    cut(image, i);
    cut(rebuilt, i);
    const model = data.models[select.value].label;
    caption.textContent = `Test image ${i}${named(i)}: as it is (left) and ` +
      `as ${model} reconstructs it (right).`;
  };
  const show = () => {
    const figure = data.models[select.value].figure;
    rebuilt.className = `thumb ${prefix}sprite-${select.value}`;
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
}
"""


def intro(dataset: str) -> str:
    data = f"the {dataset} images" if dataset else "the images"
    return (
        f"The same convolutional autoencoder is trained on {data} at several latent sizes d, "
        "beside a bias-free linear autoencoder (the PCA baseline), each from one or more "
        "seeds; the table and the figures below come from the tracked runs."
    )


@dataclass(frozen=True)
class ExplorerModel:
    label: str
    """The configuration, e.g. "conv-d3"."""
    title: str
    points: np.ndarray
    """The explored test images' codes in 3D, (n, 3)."""
    reconstructions: np.ndarray
    """Its reconstructions of those images, (n, C, H, W) in [0, 1]."""
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
    C, H, W) in [0, 1]."""
    images: np.ndarray
    """The explored test images, (n, C, H, W) in [0, 1]: grey for C = 1, colour for 3."""
    labels: np.ndarray
    explorer: list[ExplorerModel]
    classes: tuple[str, ...] = ()
    """Class names by label (ImageData.classes); empty where the images have none."""


@dataclass(frozen=True)
class Across:
    """The cross-dataset part of a page comparing several datasets."""

    table: str
    """The table of each dataset's answer, HTML."""
    figure: go.Figure
    psnr_target: float


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


def _section(anchor: str, heading: str, *parts: str, level: int = 2) -> str:
    return (
        f'<section id="{anchor}"><h{level}>{html.escape(heading)}</h{level}>'
        f"{''.join(parts)}</section>"
    )


def _items(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def _results(doc: ReportDoc, prefix: str, level: int) -> list[str]:
    rec, esc = doc.recommendation, html.escape
    question = [
        f"<p><strong>{esc(QUESTION)}</strong> {esc(intro(doc.dataset))} "
        f"Compared: {esc(doc.source)}.</p>",
        f"<p><strong>Recommended: {esc(rec.model)}.</strong> {esc(rec.why)}</p>",
    ]
    sub = level + 1
    listed = [f"<h{sub}>{esc(heading)}</h{sub}>{_items(lines)}" for heading, lines in sections(doc)]
    table = config_table(doc.configs).to_html(index=False, border=0)
    return [
        _section(f"{prefix}question", "The question and the answer", *question, level=level),
        _section(
            f"{prefix}results",
            "By configuration: means over seeds, ± their sample SD",
            table,
            level=level,
        ),  # fmt: skip
        _section(f"{prefix}observations", "Observations and recommendation", *listed, level=level),
    ]


def _figure(fig: go.Figure, div_id: str) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id)


def _tile(figures: StudyFigures) -> tuple[int, int, int]:
    """(height, width) of a thumbnail in pixels, and the scale from the image's own."""
    h, w = figures.images.shape[-2:]
    scale = max(1, THUMB_PIXELS // max(h, w))
    return h * scale, w * scale, scale


def _explorer_data(figures: StudyFigures) -> str:
    """The explorer's JSON: each model's 3D figure, the images' labels and class names,
    the tile size."""
    models = []
    for m in figures.explorer:
        fig = latent_scatter_3d(m.points, figures.labels, m.title, figures.classes)
        fig.update_layout(height=EXPLORER_HEIGHT, margin={"l": 0, "r": 0, "b": 0, "t": 40})
        models.append({"label": m.label, "figure": json.loads(pio.to_json(fig))})
    height, width, _ = _tile(figures)
    data = {
        "columns": COLUMNS, "width": width, "height": height,
        "labels": figures.labels.tolist(), "classes": list(figures.classes),
    }  # fmt: skip
    return json.dumps({**data, "models": models}).replace("</", "<\\/")


def _sprite_styles(figures: StudyFigures, prefix: str) -> str:
    """The thumbnails' size, and one CSS class per sprite sheet: the test images, then
    each model's reconstructions."""
    height, width, scale = _tile(figures)
    sheet_width = COLUMNS * figures.images.shape[-1] * scale
    size = (
        f"#{prefix}explorer-image, #{prefix}explorer-reconstruction {{ width: {width}px; "
        f"height: {height}px; background-size: {sheet_width}px auto; }}"
    )
    sheets = {"originals": figures.images}
    sheets |= {str(i): m.reconstructions for i, m in enumerate(figures.explorer)}
    return size + "".join(
        f".{prefix}sprite-{name} {{ background-image: url(data:image/png;base64,"
        f"{base64.b64encode(sprite_sheet(images)).decode('ascii')}); }}"
        for name, images in sheets.items()
    )


def _explorer(figures: StudyFigures, prefix: str) -> str:
    options = "".join(
        f'<option value="{i}">{html.escape(m.label)}: '
        f"{'its own 3D codes' if m.own_codes else '3D PCA projection of its codes'}</option>"
        for i, m in enumerate(figures.explorer)
    )
    coloured = ", coloured by class" if figures.classes else ""
    return (
        f"<style>{_sprite_styles(figures, prefix)}</style>"
        f"<p>The first {len(figures.labels):,} test images' codes{coloured}. Hover "
        "over a point to see that image and its reconstruction by the selected model.</p>"
        f'<label>Model <select id="{prefix}explorer-model">{options}</select></label>'
        f'<div class="explorer"><div id="{prefix}explorer-plot" class="explorer-plot"></div>'
        f'<div class="thumbs"><figure><div id="{prefix}explorer-image" '
        f'class="thumb {prefix}sprite-originals"></div>'
        "<figcaption>test image</figcaption></figure>"
        f'<figure><div id="{prefix}explorer-reconstruction" class="thumb"></div>'
        f'<figcaption>reconstruction</figcaption></figure><p id="{prefix}explorer-caption">'
        "</p></div></div>"
        f'<script type="application/json" id="{prefix}explorer-data">'
        f"{_explorer_data(figures)}</script>"
        f'<script>explorer("{prefix}")</script>'
    )


def _study(doc: ReportDoc, figures: StudyFigures, prefix: str = "", level: int = 2) -> list[str]:
    """One dataset's sections, their ids prefixed (several datasets share a page)."""
    return [
        *_results(doc, prefix, level),
        _section(
            f"{prefix}central-figure",
            "Test MSE and parameters against latent size",
            _figure(figures.tradeoff, f"{prefix}central-figure-plot"),
            level=level,
        ),
        _section(
            f"{prefix}loss-curves",
            "Loss curves",
            _figure(figures.loss_curves, f"{prefix}loss-curves-plot"),
            level=level,
        ),  # fmt: skip
        _section(
            f"{prefix}reconstructions",
            "Reconstructions",
            _png(figures.reconstructions, "reconstructions"),
            level=level,
        ),  # fmt: skip
        _section(f"{prefix}explorer", "Latent explorer", _explorer(figures, prefix), level=level),
        _section(
            f"{prefix}interpolations",
            "Interpolations",
            WALKS,
            _walks(figures.walks),
            level=level,
        ),  # fmt: skip
    ]


def _page(title: str, body: list[str]) -> str:
    """The page, with nothing fetched from outside it: plotly.js, styles, data and
    images are all inside."""
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}{PAGE_STYLE}</style><script>{get_plotlyjs()}</script>"
        f"<script>{EXPLORER_SCRIPT}</script></head><body>{''.join(body)}</body></html>"
    )


def study_page(doc: ReportDoc, figures: StudyFigures) -> str:
    """One dataset's study on one page."""
    return _page(doc.title, [f"<h1>{html.escape(doc.title)}</h1>", *_study(doc, figures)])


def dataset_anchor(index: int) -> str:
    """The id prefix of the index-th dataset's sections on a page of several."""
    return f"dataset-{index}-"


def datasets_page(title: str, studies: list[tuple[ReportDoc, StudyFigures]], across: Across) -> str:
    """Several datasets' studies on one page: the cross-dataset answer first (the table and
    the figure of every dataset's error against latent size), then one section a dataset,
    each holding what study_page shows for one."""
    esc = html.escape
    contents = "".join(
        f'<li><a href="#{dataset_anchor(i)}study">{esc(doc.dataset)}</a></li>'
        for i, (doc, _) in enumerate(studies)
    )
    answer = (
        f"<p><strong>{esc(QUESTION)}</strong> The same study on each dataset; the table "
        f"gives each one's recommended latent size, and the smallest latent size whose mean "
        f"test PSNR reaches {across.psnr_target:g} dB (and the PCA components any linear "
        f"code needs for it).</p>{across.table}<ul>{contents}</ul>"
    )
    body = [
        f"<h1>{esc(title)}</h1>",
        _section("across", "Every dataset: the answer", answer),
        _section(
            "across-figure",
            "Every dataset: test error against latent size",
            _figure(across.figure, "across-figure-plot"),
        ),  # fmt: skip
    ]
    for i, (doc, figures) in enumerate(studies):
        prefix = dataset_anchor(i)
        parts = "".join(_study(doc, figures, prefix, level=3))
        body.append(
            f'<section class="dataset" id="{prefix}study"><h2>{esc(doc.dataset)}</h2>'
            f"{parts}</section>"
        )
    return _page(title, body)
