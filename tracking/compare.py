"""The `compare` entry point: query, summarize, plot, then write and log it all on a
`comparison` run, and point the registry's `champion` alias at the recommended model.

Only this module writes files. The numbers come from the runs' logged metrics (latent
quality included, computed at training time); models are loaded only to draw the
reconstruction grid and the latent plots, one per (kind, latent size): the newest.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.environment_variables import MLFLOW_RUN_ID

from pipeline.config import CompareConfig
from pipeline.data import Mnist, load_mnist
from pipeline.images import sample_indices
from pipeline.latent import encode_all, project_3d
from pipeline.pca import PcaFloors, compute_floors, read_cached, write_cache
from pipeline.plots import (
    latent_scatter_3d,
    loss_curves_plotly,
    loss_curves_png,
    png_bytes,
    reconstruction_figure,
)
from pipeline.plots import standalone_html as plotly_html
from pipeline.render import ReportDoc, to_console, to_html, to_markdown
from pipeline.report import curves, observations, recommend, summarize
from pipeline.train import reconstruct
from tracking import names
from tracking.query import RunSet
from tracking.registry import load_model, set_alias, version_of_run, version_uri
from tracking.runs import (
    code_version,
    interruptible,
    log_new_params,
    stop_if_requested,
    tracked_run,
)

LATENT_3D_FILE = "latent_3d.html"  # the d=3 model's own codes
PROJECTIONS_DIR = "latent_projections"  # 3D PCA projections of every other model's codes
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value


@dataclass(frozen=True)
class Drawn:
    """What the loaded models give: reconstruction rows and 3D points per model label."""

    reconstructions: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    three_d: str | None
    """Label of the model whose own codes are 3D (conv preferred), if any."""


def pca_floors(data_dir: str, data: Mnist) -> PcaFloors:
    """The floors for this data, from the cache in data_dir or computed (and cached)."""
    floors = read_cached(data_dir, data.digest)
    if floors is None:
        print("computing the PCA floors (float64, 60,000 training images); cached afterwards")
        floors = compute_floors(data.train.images.numpy(), data.test.images.numpy(), data.digest)
        write_cache(data_dir, floors)
    return floors


def newest_per_config(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per (kind, latent_dim): the one that started last."""
    newest = runs.sort_values("start_time").groupby(["kind", "latent_dim"]).tail(1)
    return newest.sort_values(["kind", "latent_dim"])


def _draw_models(runs: pd.DataFrame, data: Mnist, registered_model: str) -> Drawn:
    """Load each newest model once; reconstruct the sample digits and encode the test set."""
    samples = data.test.images[sample_indices(data.test.labels)]
    rows, points, three_d = {}, {}, None
    for run in newest_per_config(runs).itertuples():
        name = run.registered_model if isinstance(run.registered_model, str) else registered_model
        model = load_model(version_uri(name, version_of_run(name, run.run_id)))
        rows[run.run_name] = reconstruct(model, samples).numpy()
        codes = encode_all(model, data.test.images, torch.device("cpu"))
        points[run.run_name] = project_3d(codes)
        if run.latent_dim == 3 and three_d is None:  # conv sorts before linear
            three_d = run.run_name
    return Drawn(rows, points, three_d)


def _latent_pages(drawn: Drawn, labels: np.ndarray) -> dict[str, str]:
    """Relative path -> HTML page of every latent plot."""
    pages = {}
    for label, points in drawn.points.items():
        if label == drawn.three_d:
            title = f"{label}: the test set's codes, coloured by digit"
            pages[LATENT_3D_FILE] = plotly_html(latent_scatter_3d(points, labels, title))
        else:
            title = f"{label}: 3D PCA projection of the test set's codes"
            page = plotly_html(latent_scatter_3d(points, labels, title))
            pages[f"{PROJECTIONS_DIR}/{label}.html"] = page
    return pages


def _latent_note(drawn: Drawn) -> str:
    if drawn.three_d is None:
        return (
            "No d=3 run among the compared runs: there is no latent_3d.html; the 3D PCA "
            f"projections of every model's codes are in {PROJECTIONS_DIR}/."
        )
    return (
        f"{LATENT_3D_FILE} shows {drawn.three_d}'s own 3D codes; {PROJECTIONS_DIR}/ holds "
        "3D PCA projections of the other models' codes."
    )


def _loss_curves(report: pd.DataFrame, runset: RunSet) -> pd.DataFrame:
    """Per-epoch curves labelled by model name (and the run id's start where names repeat)."""
    model_names = report.set_index("run_id")["model"]
    repeated = model_names.duplicated(keep=False)
    labels = model_names.where(~repeated, model_names + " " + model_names.index.str[:6])
    table = curves(runset.histories)
    table["label"] = table["run_id"].map(labels)
    table["order"] = table["run_id"].map({r: i for i, r in enumerate(report["run_id"])})
    return table.sort_values(["order", "epoch"])  # the report's order: kind, then d


def _write(out: Path, files: dict[str, str | bytes]) -> None:
    for relative, content in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def build_outputs(
    out: Path, runset: RunSet, report: pd.DataFrame, doc: ReportDoc, data: Mnist, registered: str
) -> None:
    """Write every artifact of the comparison into out."""
    table = _loss_curves(report, runset)
    drawn = _draw_models(runset.runs, data, registered)
    originals = data.test.images[sample_indices(data.test.labels)].float().numpy() / 255.0
    loss_png = png_bytes(loss_curves_png(table))
    grid_png = png_bytes(reconstruction_figure(originals, drawn.reconstructions))
    doc.notes.append(_latent_note(drawn))
    doc.images.update({"Loss curves": loss_png, "Reconstructions": grid_png})
    compared = pd.concat(
        [runset.runs[["run_id", "run_name", "status"]], runset.excluded], ignore_index=True
    )
    files = {
        "report.csv": report.to_csv(index=False),
        "report.md": to_markdown(doc),
        "report.html": to_html(doc),
        "compared_runs.csv": compared.to_csv(index=False),
        "loss_curves.png": loss_png,
        "loss_curves.html": plotly_html(loss_curves_plotly(table)),
        "reconstructions.png": grid_png,
        **_latent_pages(drawn, data.test.labels.numpy()),
    }
    _write(out, files)


def _ids(frame: pd.DataFrame) -> str:
    text = ",".join(frame["run_id"])
    return (
        text
        if len(text) <= MAX_TAG_LENGTH
        else text[: MAX_TAG_LENGTH - 30] + ",... (compared_runs.csv)"
    )


def run_compare(runset: RunSet, cfg: CompareConfig, registered_model: str) -> str:
    """Compare the runs on a new `comparison` run; returns its run id."""
    name = "comparison-" + datetime.now().strftime("%Y-%m-%d-%H%M%S")
    tags = {
        names.TAG_ROLE: names.ROLE_COMPARISON,
        names.TAG_CODE_VERSION: code_version(),
        names.TAG_COMPARED_RUNS: _ids(runset.runs),
        names.TAG_EXCLUDED_RUNS: _ids(runset.excluded),
    }
    if not MLFLOW_RUN_ID.get():  # under `mlflow run` the run exists already, where it was asked
        mlflow.set_experiment(experiment_id=runset.experiment_id)  # beside the compared runs
    with tracked_run(name, tags) as run:
        log_new_params(
            {
                "source": runset.source,
                "compared": len(runset.runs),
                "excluded": len(runset.excluded),
            }
        )
        with interruptible():
            data = load_mnist(cfg.data_dir)
            floors = pca_floors(cfg.data_dir, data)
        report = summarize(runset.runs, runset.histories, floors)
        rec = recommend(report, cfg.margin)
        version = version_of_run(registered_model, rec.run_id)
        notes = observations(report, floors)
        doc = ReportDoc(name, runset.source, report, notes, rec, runset.excluded)
        doc.champion = f"{registered_model} version {version}, alias {names.CHAMPION_ALIAS}"
        with tempfile.TemporaryDirectory() as out:
            build_outputs(Path(out), runset, report, doc, data, registered_model)
            stop_if_requested()
            mlflow.log_artifacts(out)
        stop_if_requested()  # the champion moves only on a complete comparison
        set_alias(registered_model, names.CHAMPION_ALIAS, version)
        mlflow.set_tags({names.TAG_CHAMPION_RUN: rec.run_id, names.TAG_CHAMPION_VERSION: version})
        print(to_console(doc))
        print(f"\nartifacts of {name} ({run.info.run_id}): {mlflow.get_artifact_uri()}")
        print(f"champion: models:/{registered_model}@{names.CHAMPION_ALIAS} -> version {version}")
        return run.info.run_id
