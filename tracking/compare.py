"""The `compare` entry point: query, summarize, plot, then write and log it all on a
`comparison` run, and point the registry's `champion` alias at the recommended model.

Only this module writes files. The numbers come from the runs' logged metrics (latent
quality included, computed at training time), grouped by configuration over seeds;
models are loaded only to draw the reconstruction grid, the latent explorer and the
interpolations, one per configuration: its best seed. study.html holds it all on one page.
"""

from __future__ import annotations

import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.environment_variables import MLFLOW_RUN_ID

from pipeline.analysis.images import sample_indices
from pipeline.analysis.interpolate import pair_indices
from pipeline.analysis.observations import observations
from pipeline.analysis.pca import PcaFloors, compute_floors, read_cached, write_cache
from pipeline.analysis.plots import (
    interpolations_figure,
    loss_curves_plotly,
    loss_curves_png,
    png_bytes,
    reconstruction_figure,
)
from pipeline.analysis.render import ReportDoc, to_console, to_description, to_html, to_markdown
from pipeline.analysis.report import curves, summarize
from pipeline.analysis.spread import aggregate, recommend
from pipeline.analysis.study_page import ExplorerModel, StudyFigures, study_page
from pipeline.analysis.tradeoff import mse_vs_latent_plotly, mse_vs_latent_png
from pipeline.analysis.views import model_views
from pipeline.config import CompareConfig
from pipeline.training.data import Mnist, load_mnist
from pipeline.training.tensors import to_unit
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

STUDY_PAGE = "study.html"  # the whole study on one offline page
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value
REPORT_IMAGES = {  # report.html's figures: caption -> artifact
    "Test MSE and parameters against latent size": "mse_vs_latent.png",
    "Loss curves": "loss_curves.png",
    "Reconstructions": "reconstructions.png",
}


@dataclass(frozen=True)
class Drawn:
    """What the loaded models give, each configuration's best seed."""

    reconstructions: dict[str, np.ndarray]
    """Run name -> its reconstructions of the sample digits."""
    explorer: list[ExplorerModel]
    """One per configuration, the one whose own codes are 3D (if any) first."""
    walks: dict[str, np.ndarray]
    """ "conv-d3: 1 to 7" -> the images decoded between the two test digits' codes."""
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
            walks[f"{run.config}: {int(test.labels[a])} to {int(test.labels[b])}"] = walk
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
    test = data.test
    originals = to_unit(test.images[sample_indices(test.labels)]).numpy()
    pngs = {
        "mse_vs_latent.png": png_bytes(mse_vs_latent_png(doc.configs, floors)),
        "loss_curves.png": png_bytes(loss_curves_png(table)),
        "reconstructions.png": png_bytes(reconstruction_figure(originals, drawn.reconstructions)),
        "interpolations.png": png_bytes(interpolations_figure(drawn.walks)),
    }
    doc.notes.append(_latent_note(drawn))
    doc.images.update({caption: pngs[file] for caption, file in REPORT_IMAGES.items()})
    explored = len(drawn.explorer[0].points)
    figures = StudyFigures(
        tradeoff=mse_vs_latent_plotly(doc.configs, floors),
        loss_curves=loss_curves_plotly(table),
        reconstructions=pngs["reconstructions.png"],
        walks=drawn.walks,
        digits=to_unit(test.images[:explored]).numpy(),
        labels=test.labels[:explored].numpy(),
        explorer=drawn.explorer,
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
        STUDY_PAGE: study_page(doc, figures),
        **pngs,
    }
    _write(out, files)


def _ids(frame: pd.DataFrame) -> str:
    text = ",".join(frame["run_id"])
    return (
        text
        if len(text) <= MAX_TAG_LENGTH
        else text[: MAX_TAG_LENGTH - 30] + ",... (compared_runs.csv)"
    )


def _tags(runset: RunSet, source_tags: dict[str, str] | None) -> dict[str, str]:
    return {
        names.TAG_ROLE: names.ROLE_COMPARISON,
        names.TAG_CODE_VERSION: code_version(),
        names.TAG_COMPARED_RUNS: _ids(runset.runs),
        names.TAG_EXCLUDED_RUNS: _ids(runset.excluded),
        **(source_tags or {}),
    }


def _where(artifact_path: str) -> str:
    """Where a logged artifact can be opened: its local path when the artifact store is a
    folder on this machine, else its URI and how to fetch it."""
    uri = mlflow.get_artifact_uri(artifact_path)
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("", "file"):
        return f"{urllib.request.url2pathname(parsed.path)} (open it in a browser)"
    return f"{uri} (fetch it: mlflow artifacts download --artifact-uri {uri})"


def _publish(doc: ReportDoc, runset: RunSet, registered_model: str, version: str) -> None:
    """Once the artifacts are logged: move the champion alias, tag and describe the run
    (and the sweep it compares), log the table, print the summary."""
    rec = doc.recommendation
    set_alias(registered_model, names.CHAMPION_ALIAS, version)
    mlflow.set_tags({names.TAG_CHAMPION_RUN: rec.run_id, names.TAG_CHAMPION_VERSION: version})
    mlflow.log_table(doc.configs, artifact_file=names.REPORT_TABLE)
    description = to_description(doc)
    describe_run(description)
    if runset.parent_run_id:
        describe_run(f"{description}\n\nFrom the comparison {doc.title}.", runset.parent_run_id)
    run_id = mlflow.active_run().info.run_id
    print(to_console(doc))
    print(f"\nartifacts of {doc.title} ({run_id}): {mlflow.get_artifact_uri()}")
    print(f"study page: {_where(STUDY_PAGE)}")
    print(f"champion: models:/{registered_model}@{names.CHAMPION_ALIAS} -> version {version}")


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
    if not MLFLOW_RUN_ID.get():  # under `mlflow run` the run exists already, where it was asked
        mlflow.set_experiment(experiment_id=runset.experiment_id)  # beside the compared runs
    with tracked_run(name, _tags(runset, source_tags)) as run:
        counts = {"compared": len(runset.runs), "excluded": len(runset.excluded)}
        log_new_params({**(entry_params or {}), "source": runset.source, **counts})
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
        _publish(doc, runset, registered_model, version)
        return run.info.run_id
