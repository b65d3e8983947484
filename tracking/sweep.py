"""The `main` entry point: every latent size and the linear baseline as child runs of
one parent run, then the `compare` entry point on them.

Where the steps run is the backend's business (tracking.backends): by default each in the
sweep's own process, one after the other; with parallel > 1 each its own training process
(tracking.launch); with backend=ray each a task on a Ray cluster (tracking.ray_steps).
Either way a step's run gets the tags and parameters that `mlflow run -e train` would give
it (source, git commit, entry point), and is rerun by that command. The comparison runs
in the sweep's process.

A sweep is idempotent: a step whose configuration already has a FINISHED run (same entry
point, same parameters as MLflow stores them, same dataset digest, same code version) is
not trained again but taken over, unless `force`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils import mlflow_tags

from pipeline.config import (
    ClusterConfig,
    CompareConfig,
    DataConfig,
    ModelConfig,
    SweepConfig,
    TrainConfig,
    one_line,
    to_params,
)
from pipeline.training import datasets
from pipeline.training.datasets import Source
from pipeline.training.hardware import precision_used, resolve_device
from tracking import launch, names, runs
from tracking.backends import make_backend
from tracking.registry import note_pickle_format, set_alias
from tracking.steps import Backend, Job

REUSE_CANDIDATES = 100  # newest runs of one configuration examined for reuse

# What `mlflow run` records of the project on the runs it makes (the sweep's own run has
# them): given to the runs the sweep makes in its own process, with their entry point.
SOURCE_TAGS = (
    mlflow_tags.MLFLOW_SOURCE_NAME,
    mlflow_tags.MLFLOW_SOURCE_TYPE,
    mlflow_tags.MLFLOW_GIT_COMMIT,
    mlflow_tags.MLFLOW_GIT_REPO_URL,
    mlflow_tags.MLFLOW_GIT_BRANCH,
    mlflow_tags.MLFLOW_PROJECT_BACKEND,
    mlflow_tags.MLFLOW_PROJECT_ENV,
)


@dataclass(frozen=True)
class Step:
    kind: str
    latent_dim: int
    seed: int
    dataset: str = names.DEFAULT_DATASET
    """The dataset parameter's value: a name or a folder."""
    dataset_name: str = names.DEFAULT_DATASET
    """What it resolved to (ImageData.name): in the run's name and registered model."""

    @property
    def entry_point(self) -> str:
        return names.TRAIN_ENTRY_POINTS[self.kind]

    @property
    def name(self) -> str:
        return names.run_name(self.kind, self.latent_dim, self.seed, self.dataset_name)


class SweepError(runs.WorkError):
    """One or more training steps failed (or the comparison did)."""


def data_for(data: DataConfig, dataset: str) -> DataConfig:
    """A step's data: the sweep's, on one of its datasets; image_size and channels apply
    to folders only, so a named dataset's step has neither."""
    if datasets.is_folder(dataset):
        return replace(data, dataset=dataset)
    return replace(data, dataset=dataset, image_size=None, channels=None)


@dataclass(frozen=True)
class SweepRequest:
    """A sweep: what it trains, on which data, how, and the registered model it fills
    (empty: each dataset's own, <dataset>-autoencoder)."""

    sweep: SweepConfig
    data: DataConfig
    train: TrainConfig
    registered_model: str = ""
    cluster: ClusterConfig = ClusterConfig()

    def sources(self) -> dict[str, Source]:
        """Each dataset's source (pipeline.training.datasets.resolve), by its parameter."""
        return {ds: datasets.resolve(data_for(self.data, ds)) for ds in self.sweep.datasets}

    def steps(self, sources: dict[str, Source] | None = None) -> list[Step]:
        """Every configuration on every dataset for the first seed, then for the next: a
        sweep stopped early has whole seeds. `sources`: each dataset's, where resolved."""
        sources = self.sources() if sources is None else sources
        sweep = self.sweep
        configs = [("conv", d) for d in sweep.latent_dims] + [("linear", sweep.linear_dim)]
        return [
            Step(kind, d, seed, ds, sources[ds].name)
            for seed in sweep.seeds
            for ds in sweep.datasets
            for kind, d in configs
        ]

    def registered_for(self, step: Step) -> str:
        return self.registered_model or names.registered_model_for(step.dataset_name)

    def step_parameters(self, step: Step) -> dict[str, str]:
        """The step's entry point parameters, as strings, exactly as MLflow stores them."""
        model = ModelConfig(step.kind, step.latent_dim)
        train = replace(self.train, seed=step.seed)
        params = to_params(model, train, data_for(self.data, step.dataset), skip=("model_kind",))
        params["registered_model"] = self.registered_for(step)
        return {k: str(v) for k, v in params.items()}

    def reuse_parameters(self, step: Step) -> dict[str, str]:
        """What a FINISHED run must have logged to be taken over for the step: the step's
        parameters, and the precision they resolve to on this machine (precision=auto
        trains in bf16 on a CPU with AMX: such a run is never taken for an fp32 step). A
        Ray driver without the steps' GPU resolves device=cuda as the nodes do."""
        device = self.train.device
        here = torch.device(device) if device != "auto" else resolve_device(device)
        used = precision_used(self.train.precision, here)
        return {**self.step_parameters(step), names.PARAM_PRECISION_USED: used}


def project_source(sweep: Run) -> dict[str, str]:
    """What `mlflow run` recorded of the project on the sweep's run (SOURCE_TAGS)."""
    return {key: sweep.data.tags[key] for key in SOURCE_TAGS if key in sweep.data.tags}


def entry_point_tags(source: dict[str, str], entry_point: str) -> dict[str, str]:
    """The tags `mlflow run` gives a run of this project's `entry_point`."""
    return {**source, names.TAG_ENTRY_POINT: entry_point}


def make_job(request: SweepRequest, step: Step, source: dict[str, str], version: str) -> Job:
    """The step as a backend's job; its runs record the sweep's code version."""
    from tracking.requests import TrainingRequest

    training = TrainingRequest(
        ModelConfig(step.kind, step.latent_dim),
        data_for(request.data, step.dataset),
        replace(request.train, seed=step.seed),
        request.registered_for(step),
        step.dataset_name,
        source_tags=entry_point_tags(source, step.entry_point),
        code_version=version,
    )
    return Job(step.name, step.entry_point, request.step_parameters(step), training)


def reusable_run(
    step: Step, params: dict[str, str], experiment_id: str, digest: str, version: str
) -> Run | None:
    """The newest FINISHED training run of the step's entry point with the same parameters
    (as MLflow stores them: strings), the same dataset digest and the same code version."""
    found = MlflowClient().search_runs(
        [experiment_id],
        f"tags.{names.TAG_ROLE} = '{names.ROLE_TRAIN}' and attributes.status = 'FINISHED' "
        f"and tags.{names.TAG_CODE_VERSION} = '{version}' "
        f"and tags.`{names.TAG_ENTRY_POINT}` = '{step.entry_point}' "
        f"and params.latent_dim = '{step.latent_dim}' and params.seed = '{step.seed}'",
        order_by=["attributes.start_time DESC"],
        max_results=REUSE_CANDIDATES,
    )
    for run in found:
        digests = {d.dataset.digest for d in run.inputs.dataset_inputs}
        same = all(run.data.params.get(k) == v for k, v in params.items())
        if same and digests == {digest} and names.TAG_REGISTERED_VERSION in run.data.tags:
            return run
    return None


def _reuse(run: Run, step: Step, registered: str) -> None:
    """Point the step's alias back at the reused run's model version."""
    version = run.data.tags[names.TAG_REGISTERED_VERSION]
    set_alias(registered, step.name, version)
    test_mse = run.data.metrics.get(names.FINAL_TEST_MSE, float("nan"))
    print(
        f"reusing FINISHED run {run.info.run_id} ({run.info.run_name}, test MSE "
        f"{test_mse:.5f}); models:/{registered}@{step.name} -> version {version}. "
        "force=true trains it again.",
        flush=True,
    )


def run_sweep(request: SweepRequest, sources: dict[str, Source] | None = None) -> str:
    """Train every (dataset, configuration, seed) as a child run of a dated parent run,
    `parallel` at a time, taking over matching FINISHED runs unless `force`; then compare.
    `sources`: each dataset's, where the caller resolved them already. Returns the
    parent's run id."""
    version = runs.code_version()
    tags = {names.TAG_ROLE: names.ROLE_SWEEP, names.TAG_CODE_VERSION: version}
    sources = request.sources() if sources is None else sources
    with runs.tracked_run(names.dated_run_name("sweep"), tags) as parent:
        steps = _begin(request, sources)
        experiment_id = parent.info.experiment_id
        start = time.perf_counter()
        source = project_source(parent)
        backend = make_backend(
            request.cluster, request.sweep.parallel, parent.info.run_id, experiment_id
        )
        todo = _Steps(request, sources, experiment_id, version, source)
        failed = todo.run(steps, backend)
        mlflow.log_metric(names.SWEEP_SECONDS, time.perf_counter() - start)
        problems = []
        if failed:
            problems.append(
                f"{len(failed)} of {len(steps)} training steps failed: {', '.join(failed)}"
            )
        # Compare whatever finished: the report lists the failed runs as excluded.
        if len(failed) < len(steps) and not _compare(parent.info.run_id, request, source):
            problems.append("the comparison failed")
        print(runs.ui_hint(experiment_id), flush=True)
        if problems:
            raise SweepError("; ".join(problems))
        return parent.info.run_id


def _begin(request: SweepRequest, sources: dict[str, Source]) -> list[Step]:
    """Record the sweep's parameters and plan, fetch each dataset once for every step,
    and set up the steps' environment. Returns the steps."""
    sweep, steps = request.sweep, request.steps(sources)
    runs.log_new_params(to_params(sweep, request.cluster))
    dims = ", ".join(map(str, sweep.latent_dims))
    on = ", ".join(s.name for s in sources.values())
    runs.describe_run(
        f"Trains {len(steps)} runs (latent sizes {dims} and the linear baseline at "
        f"{sweep.linear_dim}, seeds {', '.join(map(str, sweep.seeds))}, on {on}), then "
        "compares them: the comparison's table and recommendation replace this text."
    )
    note_pickle_format()  # once for every step
    with runs.interruptible():
        for source in sources.values():  # fetch once, before the children start
            source.ensure(request.data.data_dir)
    launch.share_cores(sweep.parallel)
    return steps


@dataclass
class _Steps:
    """The steps of one sweep, each trained (or reused) by the backend."""

    request: SweepRequest
    sources: dict[str, Source]
    experiment_id: str
    version: str
    source: dict[str, str]
    """project_source of the sweep: for the runs made in this process."""
    reused: list[str] = field(default_factory=list)

    def run(self, steps: list[Step], backend: Backend) -> list[str]:
        """Run (or reuse) every step; returns the failed ones, each with its reason."""
        pending, failed = list(enumerate(steps, 1)), []
        while pending or backend.busy():
            while pending and backend.room():
                i, step = pending.pop(0)
                if self.to_train(step, i, len(steps)):
                    backend.start(make_job(self.request, step, self.source, self.version))
            if backend.busy():
                failed += [failure for _, failure in backend.wait() if failure]
        return failed

    def to_train(self, step: Step, i: int, total: int) -> bool:
        """Announce step i of total; whether it is to be trained (not taken over)."""
        print(f"\n=== [{i}/{total}] {step.name} ===", flush=True)
        return not self.reuse(step)

    def reuse(self, step: Step) -> bool:
        """Take over the step's matching FINISHED run, if it has one and not `force`."""
        request = self.request
        if request.sweep.force:
            return False
        params = request.reuse_parameters(step)
        data = data_for(request.data, step.dataset)
        digest = datasets.digest_for(self.sources[step.dataset], data)
        found = reusable_run(step, params, self.experiment_id, digest, self.version)
        if not found:
            return False
        _reuse(found, step, request.registered_for(step))
        self.reused.append(found.info.run_id)
        mlflow.set_tag(names.TAG_REUSED_RUNS, ",".join(self.reused))
        return True


def _compare(parent_run_id: str, request: SweepRequest, source: dict[str, str]) -> bool:
    """The `compare` entry point on this sweep's runs, in this process; returns whether it
    succeeded. Its run records the entry point and parameters `mlflow run` would give it,
    and is rerun by `mlflow run . -e compare -P parent_run_id=...`."""
    from tracking.compare import run_compare
    from tracking.query import find_runs

    print("\n=== compare ===", flush=True)
    config = CompareConfig(data_dir=str(request.data.data_dir))
    params = {
        "parent_run_id": parent_run_id,
        "all_finished": "false",
        **{k: str(v) for k, v in to_params(config).items()},
        "registered_model": request.registered_model or names.AUTO_REGISTERED_MODEL,
    }
    try:
        runset = find_runs(parent_run_id)
        tags = entry_point_tags(source, "compare")
        run_compare(runset, config, request.registered_model, tags, params)
    except Exception as exc:  # its run (if it began) ended FAILED with the reason
        print(f"compare failed: {one_line(exc)}", flush=True)
        return False
    return True
