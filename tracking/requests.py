"""What a training run trains: a request, or one that continues a stopped run from its
last checkpoint."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    from_params,
    to_params,
)
from pipeline.training.attempt import Checkpoint
from pipeline.training.hardware import Hardware, resolve_hardware
from pipeline.training.train import check_resumable
from tracking import names, runs
from tracking.query import get_run

CHECKPOINT_PATH = f"{names.CHECKPOINT_DIR}/{names.CHECKPOINT_FILE}"


@dataclass(frozen=True)
class TrainingRequest:
    """One training run: what it trains, the registered model its model goes to, and
    (to continue a stopped run) the run and its last checkpoint. A sweep that trains its
    steps itself passes the tags `mlflow run` would have given the step's run (source,
    entry point) as source_tags."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    registered_model: str = names.DEFAULT_REGISTERED_MODEL
    dataset_name: str = names.DEFAULT_DATASET
    """What data.dataset resolved to (ImageData.name): in the run's name and tags."""
    resume_run_id: str | None = None
    checkpoint: Checkpoint | None = None
    source_tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    """A run made for this training by the sweep (its Ray steps): trained in that run."""
    code_version: str = field(default_factory=runs.code_version)
    """Of the code that asked for the training: a Ray worker's copy of the project has no
    git history, and its runs record the driver's version."""

    @property
    def alias(self) -> str:
        model = self.model
        return names.run_name(model.kind, model.latent_dim, self.train.seed, self.dataset_name)

    @cached_property
    def tags(self) -> dict[str, str]:
        return {
            names.TAG_DATASET: self.dataset_name,
            names.TAG_KIND: self.model.kind,
            names.TAG_LATENT: str(self.model.latent_dim),
            names.TAG_CODE_VERSION: self.code_version,
            names.TAG_ROLE: names.ROLE_TRAIN,
        }

    def hardware(self) -> Hardware:
        """How the run trains on this machine (resolved where it trains: a Ray step's on
        its node); a resumed run in the precision it began in (its checkpoint's)."""
        began_in = self.checkpoint.get("precision") if self.checkpoint else None
        return resolve_hardware(self.train, began_in)

    def params(self, hardware: Hardware) -> dict[str, object]:
        """Everything that defines the run, as logged before it trains: the parameters as
        asked, and the hardware they resolved to. (Whether CUDA graphs replayed is known
        once it trained: tracking.training logs it then.)"""
        return {
            **to_params(self.model, self.train, self.data),
            "registered_model": self.registered_model,
            names.PARAM_DEVICE_USED: str(hardware.device),
            names.PARAM_PRECISION_USED: hardware.precision,
            names.PARAM_TF32_USED: str(hardware.tf32).lower(),
        }


class ResumeError(ConfigError):
    """A run cannot be resumed; the message says why."""


def prepare_resume(run_id: str) -> TrainingRequest:
    """A stopped training run's request, with its checkpoint to continue from, or
    ResumeError saying why it cannot be resumed."""
    run = get_run(run_id)
    label = f"run {run_id} ({run.info.run_name})"
    if run.data.tags.get(names.TAG_ROLE) != names.ROLE_TRAIN:
        raise ResumeError(f"{label} is not a training run")
    if run.info.status == "FINISHED":
        raise ResumeError(f"{label} has FINISHED: nothing to resume")
    state = load_checkpoint(run_id)
    if state is None:
        raise ResumeError(
            f"{label} has no checkpoint ({CHECKPOINT_PATH}): it stopped before its first "
            "epoch was recorded; train it again instead"
        )
    params = run.data.params
    train = from_params(TrainConfig, params)
    try:
        check_resumable(state, train)
    except ValueError as exc:
        raise ResumeError(f"{label}: {exc}") from None
    model, data = from_params(ModelConfig, params), from_params(DataConfig, params)
    name = _check_same_data(run, data, label)
    registered = names.registered_model_for(name, params.get("registered_model", ""))
    return TrainingRequest(model, data, train, registered, name, run_id, state)


def _check_same_data(run, data: DataConfig, label: str) -> str:
    """The name of the run's dataset, or ResumeError where its data is not what the run
    began on (a folder whose images changed, or that is gone)."""
    from pipeline.training import datasets

    try:
        source = datasets.resolve(data)
    except datasets.DataError as exc:
        raise ResumeError(f"{label}: its dataset cannot be read ({exc})") from None
    began_on = {d.dataset.digest for d in run.inputs.dataset_inputs}
    now = datasets.digest_for(source, data)
    if began_on and began_on != {now}:
        raise ResumeError(
            f"{label} began on data of digest {', '.join(sorted(began_on))}, but "
            f"{data.dataset} now gives {now}: its images changed; train it again instead"
        )
    return source.name


def load_checkpoint(run_id: str) -> Checkpoint | None:
    """The run's last checkpoint, or None if it has none (it stopped before its first
    recorded epoch)."""
    client = MlflowClient()
    try:
        if not client.list_artifacts(run_id, names.CHECKPOINT_DIR):
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, CHECKPOINT_PATH, tmp)
            return torch.load(path, map_location="cpu", weights_only=True)
    except (MlflowException, OSError):
        return None


def continue_in_run(request: TrainingRequest, run_id: str) -> TrainingRequest:
    """The request to train in the run made for it: from the run's last checkpoint if an
    earlier attempt recorded one (a Ray task retried after its worker died), else from
    the start."""
    state = load_checkpoint(run_id)
    if state is None:
        return replace(request, run_id=run_id)
    check_resumable(state, request.train)
    return replace(request, resume_run_id=run_id, checkpoint=state)
