"""One dataset's part of a comparison: its runs' data and PCA floors, its report and
recommendation, the registered model its champion alias moves to, and its artifacts and
study-page figures (each configuration's best seed loaded to draw them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.analysis.images import sample_indices
from pipeline.analysis.interpolate import pair_indices
from pipeline.analysis.observations import observations
from pipeline.analysis.pca import PcaFloors, compute_floors, read_cached, write_cache
from pipeline.analysis.plots import (
    class_name,
    interpolations_figure,
    loss_curves_plotly,
    loss_curves_png,
    png_bytes,
    reconstruction_figure,
)
from pipeline.analysis.render import ReportDoc, to_html, to_markdown
from pipeline.analysis.report import curves, summarize
from pipeline.analysis.spread import aggregate, recommend
from pipeline.analysis.study_page import ExplorerModel, StudyFigures
from pipeline.analysis.tradeoff import mse_vs_latent_plotly, mse_vs_latent_png
from pipeline.analysis.views import model_views
from pipeline.config import DEFAULT_DATASET, CompareConfig, DataConfig
from pipeline.training import datasets
from pipeline.training.datasets import ImageData
from pipeline.training.tensors import to_unit
from tracking import names
from tracking.query import RunSet
from tracking.registry import load_model, version_of_run, version_uri
from tracking.runs import interruptible

STUDY_PAGE = "study.html"  # the whole study on one offline page
REPORT_IMAGES = {  # report.html's figures: caption -> artifact
    "Test MSE and parameters against latent size": "mse_vs_latent.png",
    "Loss curves": "loss_curves.png",
    "Reconstructions": "reconstructions.png",
}


@dataclass(frozen=True)
class Drawn:
    """What the loaded models give, each configuration's best seed."""

    reconstructions: dict[str, np.ndarray]
    """Run name -> its reconstructions of the sample images."""
    explorer: list[ExplorerModel]
    """One per configuration, the one whose own codes are 3D (if any) first."""
    walks: dict[str, np.ndarray]
    """ "conv-d3: 1 to 7" -> the images decoded between the two test images' codes."""
    three_d: str | None
    """Configuration whose own codes are 3D (conv preferred), if any."""


@dataclass(frozen=True)
class Study:
    """One dataset's comparison: its report, data and floors, its runs and their
    histories, and the registered model (and version) its champion alias moves to."""

    doc: ReportDoc
    data: ImageData
    floors: PcaFloors
    runs: pd.DataFrame
    histories: pd.DataFrame
    registered: str
    version: str


def pca_floors(data_dir: str, data: ImageData) -> PcaFloors:
    """The floors for this data, from the cache in data_dir or computed (and cached)."""
    floors = read_cached(data_dir, data.digest)
    if floors is None:
        print(
            f"computing the PCA floors of {data.name} (float64, {len(data.train):,} training "
            "images); cached afterwards"
        )
        floors = compute_floors(data.train.images.numpy(), data.test.images.numpy(), data.digest)
        write_cache(data_dir, floors)
    return floors


def _given(row: pd.Series, key: str) -> int | None:
    """An image_size or channels parameter: None where not logged or 0 (the default)."""
    value = row.get(key)
    return None if value is None or pd.isna(value) or not value else int(value)


def data_config(runs: pd.DataFrame, data_dir: str) -> DataConfig:
    """The whole dataset the runs trained on (their first run's dataset parameters), read
    from data_dir: its test images for the figures, both splits for the PCA floors."""
    first = runs.iloc[0]
    dataset = first.get("dataset")
    return DataConfig(
        dataset=str(dataset) if isinstance(dataset, str) and dataset else DEFAULT_DATASET,
        data_dir=data_dir,
        image_size=_given(first, "image_size"),
        channels=_given(first, "channels"),
    )


def by_dataset(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs grouped by the name their dataset resolved to, in order of first run."""
    key = runs["dataset_name"] if "dataset_name" in runs else pd.Series(DEFAULT_DATASET, runs.index)
    return [(str(name), rows) for name, rows in runs.groupby(key, sort=False)]


def _walk_label(config: str, data: ImageData, a: int, b: int) -> str:
    """ "conv-d3: 1 to 7", by class name; by test index where the images have none."""
    if not data.labelled:
        return f"{config}: image {a} to image {b}"
    labels = data.test.labels
    return f"{config}: {class_name(data.classes, int(labels[a]))} to " + class_name(
        data.classes, int(labels[b])
    )


def _draw_models(
    runs: pd.DataFrame, configs: pd.DataFrame, data: ImageData, registered_model: str
) -> Drawn:
    """Load each configuration's best seed once and take its views of the test set."""
    test, samples = data.test, sample_indices(data.test.labels)
    pairs = pair_indices(test.labels)
    rows, explorer, walks, three_d = {}, [], {}, None
    drawn = runs.set_index("run_id").loc[configs["best_run_id"]].reset_index()
    for run in drawn.itertuples():
        name = run.registered_model if isinstance(run.registered_model, str) else registered_model
        model = load_model(version_uri(name, version_of_run(name, run.run_id)))
        views = model_views(model, test.images, samples, pairs)
        rows[run.run_name] = views.samples
        own = run.latent_dim <= 3
        shown = "its own test codes" if own else "3D PCA projection of its test codes"
        title = f"{run.config} ({run.run_name}, its best seed): {shown}"
        explorer.append(ExplorerModel(run.config, title, views.points, views.reconstructions, own))
        for (a, b), walk in zip(pairs, views.walks, strict=True):
            walks[_walk_label(run.config, data, a, b)] = walk
        if run.latent_dim == 3 and three_d is None:  # conv sorts before linear
            three_d = run.config
    explorer.sort(key=lambda m: m.label != three_d)  # stable: the rest keep their order
    return Drawn(rows, explorer, walks, three_d)


def _latent_note(drawn: Drawn) -> str:
    if drawn.three_d is None:
        return (
            f"No d=3 run among the compared runs: the latent explorer in {STUDY_PAGE} shows "
            "3D PCA projections of every model's codes."
        )
    return (
        f"The latent explorer in {STUDY_PAGE} shows {drawn.three_d}'s own 3D codes and 3D "
        "PCA projections of the other models' codes."
    )


def _loss_curves(report: pd.DataFrame, histories: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch curves of every run, labelled by configuration: the plots draw each
    configuration's mean over its seeds and their spread."""
    table = curves(histories)
    table["label"] = table["run_id"].map(report.set_index("run_id")["config"])
    table["order"] = table["run_id"].map({r: i for i, r in enumerate(report["run_id"])})
    return table.sort_values(["order", "epoch"])  # the report's order: kind, then d


def dataset_outputs(study: Study) -> tuple[dict[str, str | bytes], StudyFigures]:
    """One dataset's artifacts (file name -> content) and its figures for the study page."""
    doc, data = study.doc, study.data
    table = _loss_curves(doc.report, study.histories)
    drawn = _draw_models(study.runs, doc.configs, data, study.registered)
    test = data.test
    originals = to_unit(test.images[sample_indices(test.labels)]).numpy()
    pngs = {
        "mse_vs_latent.png": png_bytes(mse_vs_latent_png(doc.configs, study.floors)),
        "loss_curves.png": png_bytes(loss_curves_png(table)),
        "reconstructions.png": png_bytes(reconstruction_figure(originals, drawn.reconstructions)),
        "interpolations.png": png_bytes(interpolations_figure(drawn.walks)),
    }
    doc.notes.append(_latent_note(drawn))
    doc.images.update({caption: pngs[file] for caption, file in REPORT_IMAGES.items()})
    explored = len(drawn.explorer[0].points)
    figures = StudyFigures(
        tradeoff=mse_vs_latent_plotly(doc.configs, study.floors),
        loss_curves=loss_curves_plotly(table),
        reconstructions=pngs["reconstructions.png"],
        walks=drawn.walks,
        images=to_unit(test.images[:explored]).numpy(),
        labels=test.labels[:explored].numpy(),
        explorer=drawn.explorer,
        classes=data.classes,
    )
    files = {
        "report.csv": doc.configs.to_csv(index=False),
        "runs.csv": doc.report.to_csv(index=False),
        "report.md": to_markdown(doc),
        "report.html": to_html(doc),
        **pngs,
    }
    return files, figures


def _registered(runs: pd.DataFrame, run_id: str, given: str, dataset: str) -> str:
    """Where a run's version lives: the given name, else the run's own registered_model
    parameter, else its dataset's registered model (runs from before the parameter)."""
    if given:
        return given
    logged = (
        runs.set_index("run_id").at[run_id, "registered_model"]
        if "registered_model" in runs
        else None
    )
    logged = logged if isinstance(logged, str) else ""
    return names.registered_model_for(dataset, logged)  # "auto", or '' from `mlflow run`


def dataset_study(
    title: str, runset: RunSet, runs: pd.DataFrame, cfg: CompareConfig, given: str
) -> Study:
    """One dataset's numbers, recommendation and champion version."""
    with interruptible():
        data = datasets.load(data_config(runs, cfg.data_dir))
        floors = pca_floors(cfg.data_dir, data)
    histories = runset.histories[runset.histories["run_id"].isin(runs["run_id"])]
    report = summarize(runs, histories, floors)
    configs = aggregate(report)
    rec = recommend(configs, cfg.margin)
    registered = _registered(runs, rec.run_id, given, data.name)
    version = version_of_run(registered, rec.run_id)
    notes = observations(report, configs, floors, data.labelled)
    excluded = runset.excluded
    if "dataset" in excluded:
        excluded = excluded[excluded["dataset"] == data.name]
    doc = ReportDoc(title, runset.source, report, configs, notes, rec, excluded, dataset=data.name)
    doc.champion = f"{registered} version {version}, alias {names.CHAMPION_ALIAS}"
    return Study(doc, data, floors, runs, histories, registered, version)
