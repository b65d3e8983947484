"""The `compare` entry point: query, summarize, plot, then write and log it all on a
`comparison` run, and point each dataset's registered model's `champion` alias at its
recommended model.

Only this module writes files. The numbers come from the runs' logged metrics (latent
quality included, computed at training time), grouped by dataset, then by configuration
over seeds; models are loaded only to draw the reconstruction grid, the latent explorer
and the interpolations, one per configuration: its best seed. study.html holds it all on
one page; with several datasets it opens on the cross-dataset answer, and each dataset's
other artifacts sit in a folder named after it.
"""

from __future__ import annotations

import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.environment_variables import MLFLOW_RUN_ID

from pipeline.analysis.across import across_display, across_plotly, across_png, across_table
from pipeline.analysis.plots import png_bytes
from pipeline.analysis.render import to_console, to_description
from pipeline.analysis.study_page import Across, datasets_page, study_page
from pipeline.config import CompareConfig, ConfigError
from tracking import names
from tracking.compare_dataset import STUDY_PAGE, Study, by_dataset, dataset_outputs, dataset_study
from tracking.query import RunSet
from tracking.registry import set_alias
from tracking.runs import code_version, describe_run, log_new_params, stop_if_requested, tracked_run

ACROSS_TABLE, ACROSS_FIGURE = "datasets.csv", "datasets.png"  # with several datasets
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value


def _write(out: Path, files: dict[str, str | bytes]) -> None:
    for relative, content in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def build_outputs(
    out: Path, title: str, runset: RunSet, studies: list[Study], psnr_target: float
) -> None:
    """Write every artifact of the comparison into out: one dataset's at its top, or each
    dataset's in a folder of its name beside the cross-dataset table and figure."""
    pages, files = [], {}
    for study in studies:
        own, figures = dataset_outputs(study)
        folder = f"{study.doc.dataset}/" if len(studies) > 1 else ""
        files |= {f"{folder}{name}": content for name, content in own.items()}
        pages.append((study.doc, figures))
    if len(studies) > 1:
        pairs = [(s.doc, s.floors) for s in studies]
        table = across_table(pairs, psnr_target)
        shown = across_display(table).to_html(index=False, border=0)
        across = Across(shown, across_plotly(pairs, psnr_target), psnr_target)
        files[ACROSS_TABLE] = table.to_csv(index=False)
        files[ACROSS_FIGURE] = png_bytes(across_png(pairs, psnr_target))
        files[STUDY_PAGE] = datasets_page(title, pages, across)
    else:
        files[STUDY_PAGE] = study_page(*pages[0])
    compared = pd.concat(
        [runset.runs[["run_id", "run_name", "status"]], runset.excluded], ignore_index=True
    )
    files["compared_runs.csv"] = compared.to_csv(index=False)
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


def _champion_tags(studies: list[Study]) -> dict[str, str]:
    """The champion's run and version; with several datasets, one pair per dataset."""
    if len(studies) == 1:
        rec, version = studies[0].doc.recommendation, studies[0].version
        return {names.TAG_CHAMPION_RUN: rec.run_id, names.TAG_CHAMPION_VERSION: version}
    tags = {}
    for s in studies:
        tags[f"{names.TAG_CHAMPION_RUN}.{s.doc.dataset}"] = s.doc.recommendation.run_id
        tags[f"{names.TAG_CHAMPION_VERSION}.{s.doc.dataset}"] = s.version
    return tags


def _publish(studies: list[Study], runset: RunSet, title: str, psnr_target: float) -> None:
    """Once the artifacts are logged: move each dataset's champion alias, tag and describe
    the run (and the sweep it compares), log the table, print the summary."""
    for s in studies:
        set_alias(s.registered, names.CHAMPION_ALIAS, s.version)
    mlflow.set_tags(_champion_tags(studies))
    several = len(studies) > 1
    tables = [s.doc.configs.assign(dataset=s.doc.dataset) if several else s.doc.configs
              for s in studies]  # fmt: skip
    mlflow.log_table(pd.concat(tables, ignore_index=True), artifact_file=names.REPORT_TABLE)
    parts = [to_description(s.doc) for s in studies]
    console = [to_console(s.doc) for s in studies]
    if several:
        table = across_display(across_table([(s.doc, s.floors) for s in studies], psnr_target))
        parts.insert(0, f"**{title}**\n\n" + table.to_markdown(index=False, disable_numparse=True))
        console.insert(0, table.to_string(index=False))
    description = "\n\n".join(parts)
    describe_run(description)
    if runset.parent_run_id:
        describe_run(f"{description}\n\nFrom the comparison {title}.", runset.parent_run_id)
    run_id = mlflow.active_run().info.run_id
    print("\n\n".join(console))
    print(f"\nartifacts of {title} ({run_id}): {mlflow.get_artifact_uri()}")
    print(f"study page: {_where(STUDY_PAGE)}")
    for s in studies:
        print(
            f"champion of {s.doc.dataset}: models:/{s.registered}@{names.CHAMPION_ALIAS} -> "
            f"version {s.version}"
        )


def run_compare(
    runset: RunSet,
    cfg: CompareConfig,
    registered_model: str = "",
    source_tags: dict[str, str] | None = None,
    entry_params: dict[str, str] | None = None,
) -> str:
    """Compare the runs on a new `comparison` run, each dataset's apart; returns its run
    id. registered_model: where the champion alias goes; empty, each dataset's own, from
    its runs. A sweep that compares in its own process passes the tags and parameters
    `mlflow run` would have given the `compare` entry point's run."""
    groups = by_dataset(runset.runs)
    if registered_model and len(groups) > 1:
        raise ConfigError(
            f"registered_model {registered_model!r} names one registered model, but the runs "
            f"hold {len(groups)} datasets ({', '.join(n for n, _ in groups)}): leave it empty, "
            "and each dataset's champion goes to its own"
        )
    name = names.dated_run_name("comparison")
    if not MLFLOW_RUN_ID.get():  # under `mlflow run` the run exists already, where it was asked
        mlflow.set_experiment(experiment_id=runset.experiment_id)  # beside the compared runs
    with tracked_run(name, _tags(runset, source_tags)) as run:
        counts = {"compared": len(runset.runs), "excluded": len(runset.excluded)}
        log_new_params({**(entry_params or {}), "source": runset.source, **counts})
        several = len(groups) > 1
        studies = [
            dataset_study(
                f"{name} ({dataset})" if several else name, runset, runs, cfg, registered_model
            )
            for dataset, runs in groups
        ]
        with tempfile.TemporaryDirectory() as out:
            build_outputs(Path(out), name, runset, studies, cfg.psnr_target)
            stop_if_requested()
            mlflow.log_artifacts(out)
        stop_if_requested()  # the champion moves only on a complete comparison
        _publish(studies, runset, name, cfg.psnr_target)
        return run.info.run_id
