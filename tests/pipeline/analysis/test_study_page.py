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

from pipeline.analysis.across import across_display, across_plotly, across_table
from pipeline.analysis.plots import loss_curves_plotly, png_bytes, reconstruction_figure
from pipeline.analysis.render import ReportDoc
from pipeline.analysis.report import curves, summarize
from pipeline.analysis.spread import aggregate, recommend
from pipeline.analysis.sprites import COLUMNS
from pipeline.analysis.study_page import (
    Across,
    ExplorerModel,
    StudyFigures,
    dataset_anchor,
    datasets_page,
    study_page,
)
from pipeline.analysis.tradeoff import mse_vs_latent_plotly
from tests.browser import STUDY_SECTIONS
from tests.pipeline.analysis.test_report import FLOORS, hand_built

EXPLORED = 300  # images in the explorer: 30 per class, class = index % 10
COUNTS = [EXPLORED // 10] * 10
WALK = np.linspace(0.0, 1.0, 10)[:, None, None, None] * np.ones((10, 1, 28, 28))  # black to white
DIGITS = tuple(str(d) for d in range(10))


def synthetic_study(
    dataset: str = "mnist", classes: tuple[str, ...] = DIGITS, shape=(1, 28, 28)
) -> tuple[ReportDoc, StudyFigures]:
    """The hand-built report and random thumbnails: noise that differs per image and per
    model, so a thumbnail that changes shows."""
    runs, history = hand_built()
    report = summarize(runs, history, FLOORS)
    configs = aggregate(report)
    excluded = pd.DataFrame(columns=["run_id", "run_name", "status", "reason"])
    doc = ReportDoc("comparison-test", "hand-built", report, configs, ["obs one"],
                    recommend(configs), excluded, dataset=dataset)  # fmt: skip
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
            rng.uniform(size=(EXPLORED, *shape)),
            own_codes=i == 0,
        )  # fmt: skip
        for i, label in enumerate(["conv-d3", "conv-d10"])
    ]
    walks = {"conv-d3: 1 to 7": WALK}
    originals = rng.uniform(size=(10, *shape))
    figures = StudyFigures(
        tradeoff=mse_vs_latent_plotly(configs, FLOORS),
        loss_curves=loss_curves_plotly(table),
        reconstructions=png_bytes(reconstruction_figure(originals, {"conv-d3": originals})),
        walks=walks,
        images=rng.uniform(size=(EXPLORED, *shape)),
        labels=labels,
        explorer=explorer,
        classes=classes,
    )
    return doc, figures


def synthetic_page() -> str:
    return study_page(*synthetic_study())


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
    assert [t["name"] for t in traces] == list(DIGITS)
    assert data["classes"] == list(DIGITS) and data["width"] == data["height"] == 112
    sheets = re.findall(
        r"\.sprite-(\w+) \{ background-image: url\(data:image/png;base64,([^)]*)\)", page
    )
    assert [name for name, _ in sheets] == ["originals", "0", "1"]
    for _, data_uri in sheets:
        sheet = Image.open(io.BytesIO(base64.b64decode(data_uri)))
        assert sheet.mode == "L" and sheet.size == (COLUMNS * 28, -(-EXPLORED // COLUMNS) * 28)
    assert "its own 3D codes" in page and "3D PCA projection of its codes" in page


def test_interpolations_are_strips_of_the_decoded_pixels():
    page = synthetic_page()
    (strip,) = re.findall(
        r'<span>conv-d3: 1 to 7</span><img alt="[^"]*" src="data:image/png;base64,([^"]*)"', page
    )
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(strip))))
    assert pixels.shape == (28, 280)
    expected = (WALK[:, 0] * 255).round().astype(np.uint8).transpose(1, 0, 2).reshape(28, 280)
    np.testing.assert_array_equal(pixels, expected)


CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck")  # fmt: skip


def without_plotly(page: str) -> str:
    return page.replace(get_plotlyjs(), "")


def test_rgb_page_is_in_colour_and_never_says_digit_or_mnist():
    page = study_page(*synthetic_study("cifar10", CIFAR, shape=(3, 32, 32)))
    text = without_plotly(page).lower()
    assert "digit" not in text and "mnist" not in text
    assert "cifar10" in text and "airplane" in text
    sheets = re.findall(
        r"\.sprite-(\w+) \{ background-image: url\(data:image/png;base64,([^)]*)\)", page
    )
    for _, data_uri in sheets:
        sheet = Image.open(io.BytesIO(base64.b64decode(data_uri)))
        assert sheet.mode == "RGB" and sheet.size == (COLUMNS * 32, -(-EXPLORED // COLUMNS) * 32)
    payload = re.search(r'id="explorer-data">(.*?)</script>', page, re.S).group(1)
    data = json.loads(payload)
    assert data["width"] == data["height"] == 96 and data["classes"] == list(CIFAR)


def test_two_datasets_page_has_both_sections_and_the_cross_figure():
    from tests.pipeline.analysis.test_across import RGB_FLOORS

    mnist = synthetic_study()
    cifar = synthetic_study("cifar10", CIFAR, shape=(3, 32, 32))
    pairs = [(mnist[0], FLOORS), (cifar[0], RGB_FLOORS)]
    table = across_display(across_table(pairs, 20.0)).to_html(index=False, border=0)
    across = Across(table, across_plotly(pairs, 20.0), 20.0)
    page = datasets_page("comparison-two", [mnist, cifar], across)
    assert page.count(get_plotlyjs()[:300]) == 1
    assert '<section id="across">' in page and 'id="across-figure-plot"' in page
    assert "smallest reaching 20 dB" in page
    for i, dataset in enumerate(("mnist", "cifar10")):
        prefix = dataset_anchor(i)
        assert f'<section class="dataset" id="{prefix}study"><h2>{dataset}</h2>' in page
        for anchor, heading in STUDY_SECTIONS.items():
            assert f'<section id="{prefix}{anchor}"><h3>{heading}' in page
        assert f'<script>explorer("{prefix}")</script>' in page
        assert f'id="{prefix}explorer-data"' in page and f".{prefix}sprite-originals" in page
    cifar_part = page[page.index(f'id="{dataset_anchor(1)}study"') :]
    assert "digit" not in without_plotly(cifar_part).lower()
    assert "mnist" not in without_plotly(cifar_part).lower()
