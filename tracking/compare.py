"""The `compare` entry point: query, summarize, plot, then write and log it all on a
`comparison` run, and point the registry's `champion` alias at the recommended model.

Only this module writes files. The numbers come from the runs' logged metrics (latent
quality included, computed at training time), grouped by configuration over seeds;
models are loaded only to draw the reconstruction grid and the latent plots, one per
configuration: its best seed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
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
from pipeline.observations import observations
from pipeline.pca import PcaFloors, compute_floors, read_cached, write_cache
from pipeline.plots import (
    latent_scatter_3d,
    loss_curves_plotly,
    loss_curves_png,
    png_bytes,
    reconstruction_figure,
)
from pipeline.plots import standalone_html as plotly_html
from pipeline.render import ReportDoc, to_console, to_description, to_html, to_markdown
from pipeline.report import curves, summarize
from pipeline.spread import aggregate, recommend
from pipeline.tensors import reconstruct, to_unit
from pipeline.tradeoff import mse_vs_latent_plotly, mse_vs_latent_png
from tracking import names
from tracking.query import RunSet
from tracking.registry import load_model, set_alias, version_of_run, version_uri
from tracking.runs import (
    code_version,
    describe_run,
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
    """What the loaded models give: reconstruction rows per run name, 3D points per
    configuration, drawn from its best seed."""

    reconstructions: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    drawn_runs: dict[str, str]
    """Configuration -> the run name of the seed drawn."""
    three_d: str | None
    """Configuration whose own codes are 3D (conv preferred), if any."""


def pca_floors(data_dir: str, data: Mnist) -> PcaFloors:
    """The floors for this data, from the cache in data_dir or computed (and cached)."""
    floors = read_cached(data_dir, data.digest)
    if floors is None:
        print("computing the PCA floors (float64, 60,000 training images); cached afterwards")
        floors = compute_floors(data.train.images.numpy(), data.test.images.numpy(), data.digest)
        write_cache(data_dir, floors)
    return floors


def _draw_models(
    runs: pd.DataFrame, configs: pd.DataFrame, data: Mnist, registered_model: str
) -> Drawn:
    """Load each configuration's best seed once; reconstruct the sample digits and encode
    the test set."""
    samples = data.test.images[sample_indices(data.test.labels)]
    rows, points, drawn_runs, three_d = {}, {}, {}, None
    drawn = runs.set_index("run_id").loc[configs["best_run_id"]].reset_index()
    for run in drawn.itertuples():
        name = run.registered_model if isinstance(run.registered_model, str) else registered_model
        model = load_model(version_uri(name, version_of_run(name, run.run_id)))
        rows[run.run_name] = reconstruct(model, samples).numpy()
        codes = encode_all(model, data.test.images, torch.device("cpu"))
        points[run.config], drawn_runs[run.config] = project_3d(codes), run.run_name
        if run.latent_dim == 3 and three_d is None:  # conv sorts before linear
            three_d = run.config
    return Drawn(rows, points, drawn_runs, three_d)


def _latent_pages(drawn: Drawn, labels: np.ndarray) -> dict[str, str]:
    """Relative path -> HTML page of every latent plot."""
    pages = {}
    for label, points in drawn.points.items():
        model = f"{label} ({drawn.drawn_runs[label]}, its best seed)"
        if label == drawn.three_d:
            title = f"{model}: the test set's codes, coloured by digit"
            pages[LATENT_3D_FILE] = plotly_html(latent_scatter_3d(points, labels, title))
        else:
            title = f"{model}: 3D PCA projection of the test set's codes"
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
    """Per-epoch curves of every run, labelled by configuration: the plots draw each
    configuration's mean over its seeds and their spread."""
    table = curves(runset.histories)
    table["label"] = table["run_id"].map(report.set_index("run_id")["config"])
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
    out: Path, runset: RunSet, doc: ReportDoc, floors: PcaFloors, data: Mnist, registered: str
) -> None:
    """Write every artifact of the comparison into out."""
    table = _loss_curves(doc.report, runset)
    drawn = _draw_models(runset.runs, doc.configs, data, registered)
    originals = to_unit(data.test.images[sample_indices(data.test.labels)]).numpy()
    tradeoff_png = png_bytes(mse_vs_latent_png(doc.configs, floors))
    loss_png = png_bytes(loss_curves_png(table))
    grid_png = png_bytes(reconstruction_figure(originals, drawn.reconstructions))
    doc.notes.append(_latent_note(drawn))
    doc.images.update(
        {
            "Test MSE and parameters against latent size": tradeoff_png,
            "Loss curves": loss_png,
            "Reconstructions": grid_png,
        }
    )
    compared = pd.concat(
        [runset.runs[["run_id", "run_name", "status"]], runset.excluded], ignore_index=True
    )
    files = {
        "report.csv": doc.configs.to_csv(index=False),
        "runs.csv": doc.report.to_csv(index=False),
        "report.md": to_markdown(doc),
        "report.html": to_html(doc),
        "compared_runs.csv": compared.to_csv(index=False),
        "mse_vs_latent.png": tradeoff_png,
        "mse_vs_latent.html": plotly_html(mse_vs_latent_plotly(doc.configs, floors)),
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


def run_compare(
    runset: RunSet,
    cfg: CompareConfig,
    registered_model: str,
    source_tags: dict[str, str] | None = None,
    entry_params: dict[str, str] | None = None,
) -> str:
    """Compare the runs on a new `comparison` run; returns its run id. A sweep that
    compares in its own process passes the tags and parameters `mlflow run` would have
    given the `compare` entry point's run."""
    name = names.dated_run_name("comparison")
    tags = {
        names.TAG_ROLE: names.ROLE_COMPARISON,
        names.TAG_CODE_VERSION: code_version(),
        names.TAG_COMPARED_RUNS: _ids(runset.runs),
        names.TAG_EXCLUDED_RUNS: _ids(runset.excluded),
        **(source_tags or {}),
    }
    if not MLFLOW_RUN_ID.get():  # under `mlflow run` the run exists already, where it was asked
        mlflow.set_experiment(experiment_id=runset.experiment_id)  # beside the compared runs
    with tracked_run(name, tags) as run:
        log_new_params(
            {
                **(entry_params or {}),
                "source": runset.source,
                "compared": len(runset.runs),
                "excluded": len(runset.excluded),
            }
        )
        with interruptible():
            data = load_mnist(cfg.data_dir)
            floors = pca_floors(cfg.data_dir, data)
        report = summarize(runset.runs, runset.histories, floors)
        configs = aggregate(report)
        rec = recommend(configs, cfg.margin)
        version = version_of_run(registered_model, rec.run_id)
        notes = observations(report, configs, floors)
        doc = ReportDoc(name, runset.source, report, configs, notes, rec, runset.excluded)
        doc.champion = f"{registered_model} version {version}, alias {names.CHAMPION_ALIAS}"
        with tempfile.TemporaryDirectory() as out:
            build_outputs(Path(out), runset, doc, floors, data, registered_model)
            stop_if_requested()
            mlflow.log_artifacts(out)
        stop_if_requested()  # the champion moves only on a complete comparison
        set_alias(registered_model, names.CHAMPION_ALIAS, version)
        mlflow.set_tags({names.TAG_CHAMPION_RUN: rec.run_id, names.TAG_CHAMPION_VERSION: version})
        mlflow.log_table(doc.configs, artifact_file=names.REPORT_TABLE)
        description = to_description(doc)
        describe_run(description)
        if runset.parent_run_id:
            describe_run(f"{description}\n\nFrom the comparison {name}.", runset.parent_run_id)
        print(to_console(doc))
        print(f"\nartifacts of {name} ({run.info.run_id}): {mlflow.get_artifact_uri()}")
        print(f"champion: models:/{registered_model}@{names.CHAMPION_ALIAS} -> version {version}")
        return run.info.run_id
