"""One tracked training run: the pipeline's loop with MLflow plugged in through callbacks."""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.exceptions import MlflowException
from torch import nn

from pipeline.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from pipeline.data import Mnist, load_mnist
from pipeline.health import CONSTANT, PLATEAU, PROBE_SIZE
from pipeline.images import reconstruction_grid, sample_indices
from pipeline.latent import encode_all, latent_quality
from pipeline.models import build_model, count_params
from pipeline.train import (
    RESTART_STRIDE,
    Checkpoint,
    EpochResult,
    Restart,
    TrainResult,
    check_resumable,
    fit,
    output_spread,
    reconstruct,
    resolve_device,
    to_model_input,
)
from tracking import names
from tracking.query import get_run, training_config
from tracking.registry import log_and_register
from tracking.runs import (
    append_tag_line,
    code_version,
    describe_run,
    interruptible,
    log_new_params,
    stop_if_requested,
    tracked_run,
)

CHECKPOINT_PATH = f"{names.CHECKPOINT_DIR}/{names.CHECKPOINT_FILE}"


class EpochLogger:
    """on_epoch_end callback: the epoch's metrics and a reconstruction image, at step=epoch."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.samples = samples
        self.originals = samples.float().numpy() / 255.0
        self.seconds = 0.0  # time spent logging, for the tracking-overhead figure

    def image(self, model: nn.Module) -> np.ndarray:
        return reconstruction_grid([self.originals, reconstruct(model, self.samples).numpy()])

    @staticmethod
    def metrics(result: EpochResult) -> dict[str, float]:
        return {
            names.TRAIN_MSE: result.train_mse,
            names.TEST_MSE: result.test_mse,
            names.TRAIN_EVAL_MSE: result.train_eval_mse,
            names.EPOCH_SECONDS: result.seconds,
            names.IMAGES_PER_SECOND: result.images_per_second,
        }

    def __call__(self, result: EpochResult, model: nn.Module) -> None:
        start = time.perf_counter()
        mlflow.log_metrics(self.metrics(result), step=result.epoch)
        mlflow.log_image(self.image(model), key=names.RECONSTRUCTION_KEY, step=result.epoch)
        self.seconds += time.perf_counter() - start


def record_restart(event: Restart) -> None:
    """on_restart callback: a visible line on the run for every restart."""
    line = (
        f"seed {event.seed}: {event.reason} at step {event.step} (output std "
        f"{event.output_std:.1e}, probe MSE {event.loss:.4f}, {event.black_ratio:.2f}x the "
        f"all-black output's); restarted with seed {event.seed + RESTART_STRIDE}"
    )
    append_tag_line(names.TAG_RESTART_LOG, line)
    mlflow.log_metric(names.RESTARTS, event.attempt + 1, step=event.attempt + 1)


def run_params(model: ModelConfig, data: DataConfig, train: TrainConfig) -> dict[str, object]:
    """Everything that defines a training run, as logged: limits of None are logged as 0
    (all images), the convention of the command line."""
    params = {"model_kind": model.kind, "latent_dim": model.latent_dim, **asdict(train)}
    params.update(
        data_dir=data.data_dir, train_limit=data.train_limit or 0, test_limit=data.test_limit or 0
    )
    return params


TRAINING, TESTING = "training", "testing"  # the datasets' contexts


def _datasets(data: Mnist) -> dict[str, mlflow.data.Dataset]:
    """The two splits as MLflow datasets, by context."""
    found = {}
    for split, context in ((data.train, TRAINING), (data.test, TESTING)):
        with warnings.catch_warnings():  # MLflow registers its local source class twice
            warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
            found[context] = mlflow.data.from_numpy(
                split.images.numpy(),
                targets=split.labels.numpy(),
                source=data.source,
                name=f"mnist-{context}",
                digest=data.digest,
            )
    return found


def _log_summary(
    result: TrainResult, quality: dict[str, float], seconds: float, model_id: str, datasets: dict
) -> None:
    """The run's summary metrics, linked to its logged model (the Models tab's columns),
    and each measured on a split to that split's dataset."""
    final = result.history[-1]
    best = min(result.history, key=lambda r: r.test_mse)
    counts = count_params(result.model)
    on_test = {
        names.FINAL_TEST_MSE: final.test_mse,
        names.BEST_TEST_MSE: best.test_mse,
        names.GAP: final.test_mse - result.final_train_mse,
        **quality,
    }
    on_train = {names.FINAL_TRAIN_MSE: result.final_train_mse}
    other = {
        names.BEST_EPOCH: best.epoch,
        names.PARAMS_TOTAL: counts.total,
        names.PARAMS_ENCODER: counts.encoder,
        names.PARAMS_DECODER: counts.decoder,
        names.TRAIN_SECONDS: seconds,
        names.RESTARTS: len(result.restarts),
        names.RESTARTS_CONSTANT: sum(r.reason == CONSTANT for r in result.restarts),
        names.RESTARTS_PLATEAU: sum(r.reason == PLATEAU for r in result.restarts),
    }
    mlflow.log_metrics(on_test, model_id=model_id, dataset=datasets[TESTING])
    mlflow.log_metrics(on_train, model_id=model_id, dataset=datasets[TRAINING])
    mlflow.log_metrics(other, model_id=model_id)
    mlflow.set_tag(names.TAG_INIT_SEED, str(result.init_seed))


def _latent_quality(model: nn.Module, data: Mnist, device: torch.device) -> dict[str, float]:
    """kNN accuracy and silhouette of the final model's codes, the spread of its outputs
    (collapse), and what they cost, as summary metrics."""
    start = time.perf_counter()
    with interruptible():
        spread = output_spread(model, to_model_input(data.test.images[:PROBE_SIZE], device))
        train_codes, test_codes = (
            encode_all(model, s.images, device) for s in (data.train, data.test)
        )
        accuracy, silhouette = latent_quality(
            train_codes, data.train.labels.numpy(), test_codes, data.test.labels.numpy()
        )
    return {
        names.KNN_ACCURACY: accuracy,
        names.SILHOUETTE: silhouette,
        names.LATENT_SECONDS: time.perf_counter() - start,
        names.OUTPUT_STD: spread,
    }


def _restarts_line(result: TrainResult) -> str:
    if not result.restarts:
        return "- No restart: the first initialisation passed the health check."
    events = "; ".join(f"seed {r.seed}: {r.reason} at step {r.step}" for r in result.restarts)
    return (
        f"- **{len(result.restarts)} restart(s)** ({events}); kept the initialisation of "
        f"seed {result.init_seed}. See the tag `{names.TAG_RESTART_LOG}`."
    )


def describe_training(
    alias: str, model_cfg: ModelConfig, train_cfg: TrainConfig, data: Mnist, result: TrainResult
) -> str:
    """The training run's Description (Markdown): what it trained and how it ended."""
    final, best = result.history[-1], min(result.history, key=lambda r: r.test_mse)
    kind = "Convolutional" if model_cfg.kind == "conv" else "Linear (bias-free, PCA-like)"
    return "\n".join(
        [
            f"**{alias}**: {kind} autoencoder with a {model_cfg.latent_dim}-number code, "
            f"trained for {train_cfg.epochs} epochs from seed {train_cfg.seed} on "
            f"{len(data.train.labels):,} MNIST training images, tested on "
            f"{len(data.test.labels):,}.",
            "",
            f"- Final test MSE **{final.test_mse:.5f}**; training MSE "
            f"{result.final_train_mse:.5f} (gap {final.test_mse - result.final_train_mse:+.5f}).",
            f"- Best test MSE {best.test_mse:.5f}, at epoch {best.epoch}.",
            _restarts_line(result),
        ]
    )


class ResumeError(ConfigError):
    """A run cannot be resumed; the message says why."""


@dataclass(frozen=True)
class Resume:
    """A stopped training run to continue, its configuration and its last checkpoint."""

    run_id: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    registered_model: str
    checkpoint: Checkpoint


def prepare_resume(run_id: str) -> Resume:
    """Read a stopped training run and its checkpoint, or raise ResumeError saying why not."""
    client = MlflowClient()
    run = get_run(run_id)
    label = f"run {run_id} ({run.info.run_name})"
    if run.data.tags.get(names.TAG_ROLE) != names.ROLE_TRAIN:
        raise ResumeError(f"{label} is not a training run")
    if run.info.status == "FINISHED":
        raise ResumeError(f"{label} has FINISHED: nothing to resume")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run_id, CHECKPOINT_PATH, tmp)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (MlflowException, OSError):
        raise ResumeError(
            f"{label} has no checkpoint ({CHECKPOINT_PATH}): it stopped before its first "
            "epoch was recorded; train it again instead"
        ) from None
    model, data, train, registered = training_config(run)
    try:
        check_resumable(state, train)
    except ValueError as exc:
        raise ResumeError(f"{label}: {exc}") from None
    return Resume(run_id, model, data, train, registered, state)


class CheckpointSaver:
    """on_checkpoint callback: the training state as the run's checkpoint artifact,
    replaced every epoch (written before the epoch's metrics, so that every recorded
    epoch can be resumed from)."""

    def __init__(self, logger: EpochLogger, epoch: int = 0) -> None:
        self.logger = logger
        self.folder = tempfile.TemporaryDirectory()
        self.epoch = epoch  # of the last checkpoint stored

    def __call__(self, state: Checkpoint) -> None:
        start = time.perf_counter()
        path = Path(self.folder.name) / names.CHECKPOINT_FILE
        torch.save(state, path)
        mlflow.log_artifact(str(path), names.CHECKPOINT_DIR)
        self.epoch = state["epoch"]
        self.logger.seconds += time.perf_counter() - start

    def hint(self, run_id: str, kind: str) -> str:
        if not self.epoch:
            return f"run {run_id} stopped before its first checkpoint: train it again"
        return (
            f"run {run_id} has a checkpoint after epoch {self.epoch}; continue it with "
            f"`mlflow run . -e {names.TRAIN_ENTRY_POINTS[kind]} --env-manager local "
            f"-P resume_run_id={run_id}`"
        )


def _log_missing_epochs(run_id: str, resume: Resume, logger: EpochLogger) -> None:
    """Record the checkpoint's epochs that the run lacks: the checkpoint is written before
    an epoch's metrics, so a run stopped in between lacks its last epoch."""
    logged = {m.step for m in MlflowClient().get_metric_history(run_id, names.TEST_MSE)}
    missing = [r for r in resume.checkpoint["history"] if r["epoch"] not in logged]
    if not missing:
        return
    model = build_model(resume.model.kind, resume.model.latent_dim)
    model.load_state_dict(resume.checkpoint["model"])  # the state after the last of them
    for record in missing:
        mlflow.log_metrics(EpochLogger.metrics(EpochResult(**record)), step=record["epoch"])
    last = missing[-1]["epoch"]
    mlflow.log_image(logger.image(model), key=names.RECONSTRUCTION_KEY, step=last)


def train_tracked(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    registered_model: str = names.DEFAULT_REGISTERED_MODEL,
    resume: Resume | None = None,
) -> str:
    """Train one configuration in an MLflow run and register the model; with `resume`, in
    the stopped run, from its checkpoint. Returns the training run's id."""
    alias = names.run_name(model_cfg.kind, model_cfg.latent_dim, train_cfg.seed)
    tags = {
        names.TAG_KIND: model_cfg.kind,
        names.TAG_LATENT: str(model_cfg.latent_dim),
        names.TAG_CODE_VERSION: code_version(),
        names.TAG_ROLE: names.ROLE_TRAIN,
    }
    args = (alias, model_cfg, data_cfg, train_cfg, registered_model, resume)
    if resume is None:
        with tracked_run(alias, tags, system_metrics=True) as run:
            return _train_in_run(run, tags, *args)
    if MLFLOW_RUN_ID.get():  # `mlflow run` made a new run: it records the resume
        record = {names.TAG_ROLE: names.ROLE_RESUME, names.TAG_RESUMED_RUN: resume.run_id}
        with (
            tracked_run(f"resume-{alias}", record),
            tracked_run(None, tags, nested=True, run_id=resume.run_id, system_metrics=True) as run,
        ):
            return _train_in_run(run, tags, *args)
    with tracked_run(None, tags, run_id=resume.run_id, system_metrics=True) as run:
        return _train_in_run(run, tags, *args)


def _train_in_run(
    run: mlflow.ActiveRun,
    tags: dict[str, str],
    alias: str,
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    registered_model: str,
    resume: Resume | None,
) -> str:
    run_id = run.info.run_id
    log_new_params(
        {
            **run_params(model_cfg, data_cfg, train_cfg),
            "registered_model": registered_model,
            "device_used": str(resolve_device(train_cfg.device)),
        }
    )
    action = f"resuming after epoch {resume.checkpoint['epoch']}" if resume else "training"
    what = f"{model_cfg.kind} autoencoder, latent {model_cfg.latent_dim}, {train_cfg.epochs} epochs"
    print(f"run {run_id} ({alias}): {action} {what}")
    describe_run(f"**{alias}**: {action} a {what}, seed {train_cfg.seed}. A summary follows.")
    with interruptible():
        data = load_mnist(data_cfg.data_dir, data_cfg.train_limit, data_cfg.test_limit)
    logger = EpochLogger(data.test.images[sample_indices(data.test.labels)])
    start = time.perf_counter()
    prior_seconds = 0.0
    datasets = _datasets(data)
    if resume is None:
        for context, dataset in datasets.items():
            mlflow.log_input(dataset, context=context)
    else:
        _log_missing_epochs(run_id, resume, logger)
        append_tag_line(names.TAG_RESUMED, f"after epoch {resume.checkpoint['epoch']}")
        prior_seconds = sum(r["seconds"] for r in resume.checkpoint["history"])
    logger.seconds += time.perf_counter() - start
    start = time.perf_counter()
    saver = CheckpointSaver(logger, resume.checkpoint["epoch"] if resume else 0)
    try:
        result = fit(
            lambda: build_model(model_cfg.kind, model_cfg.latent_dim),
            data,
            train_cfg,
            on_epoch_end=logger,
            on_restart=record_restart,
            on_step=stop_if_requested,
            on_checkpoint=saver,
            resume=resume.checkpoint if resume else None,
        )
    except BaseException:
        print(saver.hint(run_id, model_cfg.kind), file=sys.stderr, flush=True)
        raise
    stop_if_requested()
    seconds = prior_seconds + time.perf_counter() - start
    quality = _latent_quality(result.model, data, resolve_device(train_cfg.device))
    stop_if_requested()  # the last point at which the run can still end KILLED
    start = time.perf_counter()
    mlflow.log_image(logger.image(result.model), artifact_file=names.RECONSTRUCTION_FILE)
    description = describe_training(alias, model_cfg, train_cfg, data, result)
    registered = log_and_register(
        result.model,
        (data.test.images[:2].unsqueeze(1).float() / 255.0).numpy(),
        registered_model,
        alias,
        name=names.config_name(model_cfg.kind, model_cfg.latent_dim),
        description=description,
        tags={**tags, "run_id": run_id},
    )
    _log_summary(result, quality, seconds, registered.model_id, datasets)
    registration = f"Registered as version {registered.version}: `{registered.uri}`."
    describe_run(f"{description}\n\n{registration}")
    mlflow.set_tag(names.TAG_REGISTERED_VERSION, registered.version)
    mlflow.log_metric(names.TRACKING_SECONDS, logger.seconds + time.perf_counter() - start)
    print(
        f"registered {registered_model} version {registered.version} as {registered.uri}; "
        f"test MSE {result.history[-1].test_mse:.5f}"
    )
    return run_id
