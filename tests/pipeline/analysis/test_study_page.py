"""study.html from hand-built numbers: one copy of plotly.js, every section, the explorer's
data and thumbnails inside, nothing fetched from outside."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
from PIL import Image
from plotly.offline import get_plotlyjs

from pipeline.analysis.plots import loss_curves_plotly, png_bytes, reconstruction_figure
from pipeline.analysis.render import ReportDoc
from pipeline.analysis.report import curves, summarize
from pipeline.analysis.spread import aggregate, recommend
from pipeline.analysis.sprites import COLUMNS, TILE
from pipeline.analysis.study_page import ExplorerModel, StudyFigures, study_page
from pipeline.analysis.tradeoff import mse_vs_latent_plotly
from tests.browser import STUDY_SECTIONS
from tests.pipeline.analysis.test_report import FLOORS, hand_built

EXPLORED = 300  # digits in the explorer: 30 per digit, digit = index % 10
COUNTS = [EXPLORED // 10] * 10
WALK = np.linspace(0.0, 1.0, 10)[:, None, None] * np.ones((10, 28, 28))  # black to white


def synthetic_page() -> str:
    """The page for the hand-built report, with random thumbnails: noise that differs
    per image and per model, so a thumbnail that changes shows."""
    runs, history = hand_built()
    report = summarize(runs, history, FLOORS)
    configs = aggregate(report)
    excluded = pd.DataFrame(columns=["run_id", "run_name", "status", "reason"])
    doc = ReportDoc("comparison-test", "hand-built", report, configs, ["obs one"],
                    recommend(configs), excluded)  # fmt: skip
    table = curves(history).assign(
        label=lambda t: t["run_id"].map(report.set_index("run_id")["config"])
    )
    rng = np.random.default_rng(0)
    labels = np.arange(EXPLORED) % 10
    centres = rng.normal(scale=5.0, size=(10, 3))
    explorer = [
        ExplorerModel(
            label,
            f"{label}: codes",
            centres[labels] * (i + 1) + rng.normal(size=(EXPLORED, 3)),
            rng.uniform(size=(EXPLORED, 28, 28)),
            own_codes=i == 0,
        )  # fmt: skip
        for i, label in enumerate(["conv-d3", "conv-d10"])
    ]
    walks = {"conv-d3: 1 to 7": WALK}
    originals = rng.uniform(size=(10, 28, 28))
    figures = StudyFigures(
        tradeoff=mse_vs_latent_plotly(configs, FLOORS),
        loss_curves=loss_curves_plotly(table),
        reconstructions=png_bytes(reconstruction_figure(originals, {"conv-d3": originals})),
        walks=walks,
        digits=rng.uniform(size=(EXPLORED, 28, 28)),
        labels=labels,
        explorer=explorer,
    )
    return study_page(doc, figures)


def test_page_holds_one_plotly_and_every_section():
    page = synthetic_page()
    assert page.count(get_plotlyjs()[:300]) == 1  # one copy of plotly.js
    for anchor, heading in STUDY_SECTIONS.items():
        assert f'<section id="{anchor}"><h2>{heading}' in page
    assert "<script src=" not in page.replace(" ", "") and "<link" not in page
    assert "https://" not in page.replace(get_plotlyjs(), "")  # no outside reference
    assert "Recommended: " in page and "obs one" in page and "0.04400 ± 0.00283" in page


def test_explorer_data_and_thumbnails():
    page = synthetic_page()
    payload = re.search(r'id="explorer-data">(.*?)</script>', page, re.S).group(1)
    data = json.loads(payload)
    assert [m["label"] for m in data["models"]] == ["conv-d3", "conv-d10"]
    assert data["columns"] == COLUMNS and data["labels"] == (np.arange(EXPLORED) % 10).tolist()
    traces = data["models"][0]["figure"]["data"]
    assert [t["name"] for t in traces] == [f"digit {d}" for d in range(10)]
    sheets = re.findall(
        r"\.sprite-(\w+) \{ background-image: url\(data:image/png;base64,([^)]*)\)", page
    )
    assert [name for name, _ in sheets] == ["originals", "0", "1"]
    for _, data_uri in sheets:
        sheet = Image.open(io.BytesIO(base64.b64decode(data_uri)))
        assert sheet.mode == "L" and sheet.size == (COLUMNS * TILE, -(-EXPLORED // COLUMNS) * TILE)
    assert "its own 3D codes" in page and "3D PCA projection of its codes" in page


def test_interpolations_are_strips_of_the_decoded_pixels():
    page = synthetic_page()
    (strip,) = re.findall(
        r'<span>conv-d3: 1 to 7</span><img alt="[^"]*" src="data:image/png;base64,([^"]*)"', page
    )
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(strip))))
    assert pixels.shape == (28, 280)
    expected = (WALK * 255).round().astype(np.uint8).transpose(1, 0, 2).reshape(28, 280)
    np.testing.assert_array_equal(pixels, expected)
