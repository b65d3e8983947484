"""One tracked training run: the pipeline's loop with MLflow plugged in through callbacks."""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_RUN_ID
from torch import nn

from pipeline.analysis.images import reconstruction_grid, sample_indices
from pipeline.analysis.latent import latent_quality
from pipeline.config import (
    TrainingFailed,
)
from pipeline.training import datasets
from pipeline.training.attempt import Checkpoint
from pipeline.training.datasets import ImageData
from pipeline.training.hardware import Hardware
from pipeline.training.health import CONSTANT, PLATEAU, PROBE_SIZE, output_spread
from pipeline.training.models import build_model, count_params
from pipeline.training.restarts import RESTART_STRIDE, Restart
from pipeline.training.tensors import reconstruct, to_model_input, to_unit
from pipeline.training.train import EpochResult, TrainResult, fit
from tracking import names, runs
from tracking.registry import Registered, Registration, log_and_register
from tracking.requests import TrainingRequest


class TrackingTimer:
    """Seconds spent in tracking calls: the run's tracking_seconds, the overhead figure."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


class EpochLogger:
    """on_epoch_end callback: the epoch's metrics and a reconstruction image, at step=epoch."""

    def __init__(self, samples: torch.Tensor, timer: TrackingTimer) -> None:
        self.samples = samples
        self.originals = to_unit(samples).numpy()
        self.timer = timer

    def image(self, model: nn.Module) -> np.ndarray:
        return reconstruction_grid([self.originals, reconstruct(model, self.samples).numpy()])

    def log_image(self, model: nn.Module, epoch: int) -> None:
        # synchronous: by default an image with a step is written by a background
        # queue whose thread polls once a second, and the process's exit waits for
        # every run's queue in turn (a sweep's process holds one per step). An image
        # an epoch is cheap to write at once, and then counts in tracking_seconds.
        mlflow.log_image(
            self.image(model), key=names.RECONSTRUCTION_KEY, step=epoch, synchronous=True
        )

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
        with self.timer.timing():
            mlflow.log_metrics(self.metrics(result), step=result.epoch)
            self.log_image(model, result.epoch)


def record_restart(event: Restart) -> None:
    """on_restart callback: a visible line on the run for every restart."""
    line = (
        f"seed {event.seed}: {event.reason} at step {event.step} (output std "
        f"{event.output_std:.1e}, probe MSE {event.loss:.4f}, {event.black_ratio:.2f}x the "
        f"all-black output's); restarted with seed {event.seed + RESTART_STRIDE}"
    )
    runs.append_tag_line(names.TAG_RESTART_LOG, line)
    mlflow.log_metric(names.RESTARTS, event.attempt + 1, step=event.attempt + 1)


TRAINING, TESTING = "training", "testing"  # the datasets' contexts


def _datasets(data: ImageData) -> dict[str, mlflow.data.Dataset]:
    """The two splits as MLflow datasets, by context."""
    found = {}
    for split, context in ((data.train, TRAINING), (data.test, TESTING)):
        with warnings.catch_warnings():  # MLflow registers its local source class twice
            warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
            found[context] = mlflow.data.from_numpy(
                split.images.numpy(),
                targets=split.labels.numpy(),
                source=data.source,
                name=f"{data.name}-{context}",
                digest=data.digest,
            )
    return found


def _log_summary(
    result: TrainResult, quality: dict[str, float], seconds: float, model_id: str, datasets: dict
) -> None:
    """The run's summary metrics, linked to its logged model (the Models tab's columns),
    and each measured on a split to that split's dataset."""
    counts = count_params(result.model)
    on_test = {
        names.FINAL_TEST_MSE: result.final.test_mse,
        names.BEST_TEST_MSE: result.best.test_mse,
        names.GAP: result.gap,
        **quality,
    }
    other = {
        names.BEST_EPOCH: result.best.epoch,
        names.PARAMS_TOTAL: counts.total,
        names.PARAMS_ENCODER: counts.encoder,
        names.PARAMS_DECODER: counts.decoder,
        names.TRAIN_SECONDS: seconds,
        names.RESTARTS: len(result.restarts),
        names.RESTARTS_CONSTANT: sum(r.reason == CONSTANT for r in result.restarts),
        names.RESTARTS_PLATEAU: sum(r.reason == PLATEAU for r in result.restarts),
        names.GRAPH_REPLAYS: result.graph_replays,
    }
    on_train = {names.FINAL_TRAIN_MSE: result.final_train_mse}
    mlflow.log_metrics(on_test, model_id=model_id, dataset=datasets[TESTING])
    mlflow.log_metrics(on_train, model_id=model_id, dataset=datasets[TRAINING])
    mlflow.log_metrics(other, model_id=model_id)
    mlflow.set_tag(names.TAG_INIT_SEED, str(result.init_seed))


def _latent_quality(result: TrainResult, data: ImageData, device: torch.device) -> dict[str, float]:
    """kNN accuracy and silhouette of the final model's codes (from fit's final
    evaluation) where the data has classes, the spread of its outputs (collapse), and what
    they cost, as summary metrics."""
    start, model, found = time.perf_counter(), result.model, {}
    with runs.interruptible():
        spread = output_spread(model, to_model_input(data.test.images[:PROBE_SIZE], device))
        if data.labelled:
            found[names.KNN_ACCURACY], found[names.SILHOUETTE] = latent_quality(
                result.train_codes.numpy(),
                data.train.labels.numpy(),
                result.test_codes.numpy(),
                data.test.labels.numpy(),
            )
    found[names.LATENT_SECONDS] = time.perf_counter() - start
    found[names.OUTPUT_STD] = spread
    return found


def _restarts_line(result: TrainResult) -> str:
    if not result.restarts:
        return "- No restart: the first initialisation passed the health check."
    events = "; ".join(f"seed {r.seed}: {r.reason} at step {r.step}" for r in result.restarts)
    return (
        f"- **{len(result.restarts)} restart(s)** ({events}); kept the initialisation of "
        f"seed {result.init_seed}. See the tag `{names.TAG_RESTART_LOG}`."
    )


_PRECISION = {"fp32": "", "bf16": " (forward in bfloat16 autocast)"}


def describe_training(
    request: TrainingRequest, hardware: Hardware, data: ImageData, result: TrainResult
) -> str:
    """The training run's Description (Markdown): what it trained and how it ended."""
    model, train = request.model, request.train
    kind = "Convolutional" if model.kind == "conv" else "Linear (bias-free, PCA-like)"
    return "\n".join(
        [
            f"**{request.alias}**: {kind} autoencoder with a {model.latent_dim}-number code, "
            f"trained for {train.epochs} epochs from seed {train.seed}"
            f"{_PRECISION[hardware.precision]} on "
            f"{len(data.train):,} {data.name} training images "
            f"({'x'.join(map(str, data.shape))}), tested on {len(data.test):,}.",
            "",
            f"- Final test MSE **{result.final.test_mse:.5f}**; training MSE "
            f"{result.final_train_mse:.5f} (gap {result.gap:+.5f}).",
            f"- Best test MSE {result.best.test_mse:.5f}, at epoch {result.best.epoch}.",
            _restarts_line(result),
        ]
    )


class CheckpointSaver:
    """on_checkpoint callback: the training state as the run's checkpoint artifact,
    replaced every epoch (written before the epoch's metrics, so that every recorded
    epoch can be resumed from)."""

    def __init__(self, timer: TrackingTimer, epoch: int = 0) -> None:
        self.timer = timer
        self.folder = tempfile.TemporaryDirectory()
        self.epoch = epoch  # of the last checkpoint stored

    def __call__(self, state: Checkpoint) -> None:
        with self.timer.timing():
            path = Path(self.folder.name) / names.CHECKPOINT_FILE
            torch.save(state, path)
            mlflow.log_artifact(str(path), names.CHECKPOINT_DIR)
            self.epoch = state["epoch"]

    def hint(self, run_id: str, kind: str) -> str:
        if not self.epoch:
            return f"run {run_id} stopped before its first checkpoint: train it again"
        return (
            f"run {run_id} has a checkpoint after epoch {self.epoch}; continue it with "
            f"`mlflow run . -e {names.TRAIN_ENTRY_POINTS[kind]} --env-manager local "
            f"-P resume_run_id={run_id}`"
        )


def _log_missing_epochs(
    run_id: str, checkpoint: Checkpoint, logger: EpochLogger, model: nn.Module
) -> None:
    """Record the checkpoint's epochs that the run lacks: the checkpoint is written before
    an epoch's metrics, so a run stopped in between lacks its last epoch."""
    logged = {m.step for m in MlflowClient().get_metric_history(run_id, names.TEST_MSE)}
    missing = [r for r in checkpoint["history"] if r["epoch"] not in logged]
    if not missing:
        return
    model.load_state_dict(checkpoint["model"])  # the state after the last of them
    for record in missing:
        mlflow.log_metrics(EpochLogger.metrics(EpochResult(**record)), step=record["epoch"])
    last = missing[-1]["epoch"]
    logger.log_image(model, last)


def train_tracked(request: TrainingRequest) -> str:
    """Train one configuration in an MLflow run and register the model; with
    request.resume_run_id, in that stopped run, from its checkpoint. Returns the run's id."""
    tags, resumed = {**request.tags, **request.source_tags}, request.resume_run_id
    if resumed is None and request.run_id is None:
        with runs.tracked_run(request.alias, tags, system_metrics=True) as run:
            return _train_in_run(run.info.run_id, request)
    if resumed is None:  # the run the sweep made for it
        with runs.tracked_run(None, tags, run_id=request.run_id, system_metrics=True):
            return _train_in_run(request.run_id, request)
    if MLFLOW_RUN_ID.get():  # `mlflow run` made a new run: it records the resume
        record = {names.TAG_ROLE: names.ROLE_RESUME, names.TAG_RESUMED_RUN: resumed}
        with (
            runs.tracked_run(f"resume-{request.alias}", record),
            runs.tracked_run(None, tags, run_id=resumed, system_metrics=True),
        ):
            return _train_in_run(resumed, request)
    with runs.tracked_run(None, tags, run_id=resumed, system_metrics=True):
        return _train_in_run(resumed, request)


def _train_in_run(run_id: str, request: TrainingRequest) -> str:
    timer, hardware = TrackingTimer(), request.hardware()
    data, logger, datasets, prior_seconds = _start(run_id, request, hardware, timer)
    start = time.perf_counter()
    with hardware.settings():  # every forward of the run: fit's, output_std's, the images'
        result = _fit(run_id, request, hardware, data, logger)
        seconds = prior_seconds + time.perf_counter() - start
        quality = _latent_quality(result, data, hardware.device)
        runs.stop_if_requested()  # the last point at which the run can still end KILLED
        with timer.timing():
            used = result.graph_replays > 0  # captured and replayed: known only now
            runs.log_new_params({names.PARAM_CUDA_GRAPHS_USED: str(used).lower()})
            description = describe_training(request, hardware, data, result)
            registered = _register(run_id, request, description, data, result, logger)
            _log_summary(result, quality, seconds, registered.model_id, datasets)
            registration = f"Registered as version {registered.version}: `{registered.uri}`."
            runs.describe_run(f"{description}\n\n{registration}")
            mlflow.set_tag(names.TAG_REGISTERED_VERSION, registered.version)
    mlflow.log_metric(names.TRACKING_SECONDS, timer.seconds)
    print(
        f"registered {request.registered_model} version {registered.version} as "
        f"{registered.uri}; test MSE {result.history[-1].test_mse:.5f}"
    )
    return run_id


def _start(
    run_id: str, request: TrainingRequest, hardware: Hardware, timer: TrackingTimer
) -> tuple:
    """Log the run's parameters and datasets (or, resuming, the epochs it lacks) and load
    the data. Returns the data, the epoch logger, the datasets and the seconds of training
    the run already had."""
    model, train, checkpoint = request.model, request.train, request.checkpoint
    runs.log_new_params(request.params(hardware))
    action = f"resuming after epoch {checkpoint['epoch']}" if checkpoint else "training"
    what = f"{model.kind} autoencoder, latent {model.latent_dim}, {train.epochs} epochs"
    print(f"run {run_id} ({request.alias}): {action} {what}")
    runs.describe_run(
        f"**{request.alias}**: {action} a {what}, seed {train.seed}. A summary follows."
    )
    with runs.interruptible():
        data = datasets.load(request.data)
    logger = EpochLogger(data.test.images[sample_indices(data.test.labels)], timer)
    with timer.timing():
        linked = _datasets(data)
        if checkpoint is None:
            runs.log_datasets(linked)
            return data, logger, linked, 0.0
        rebuilt = build_model(model.kind, model.latent_dim, data.shape)
        _log_missing_epochs(run_id, checkpoint, logger, rebuilt)
        runs.append_tag_line(names.TAG_RESUMED, f"after epoch {checkpoint['epoch']}")
    return data, logger, linked, sum(r["seconds"] for r in checkpoint["history"])


def _fit(
    run_id: str, request: TrainingRequest, hardware: Hardware, data: ImageData, logger: EpochLogger
) -> TrainResult:
    """The pipeline's training loop, with the run's callbacks; on any stop, a hint on
    how to continue the run."""
    model, checkpoint = request.model, request.checkpoint
    saver = CheckpointSaver(logger.timer, checkpoint["epoch"] if checkpoint else 0)
    try:
        result = fit(
            lambda: build_model(model.kind, model.latent_dim, data.shape),
            data,
            request.train,
            on_epoch_end=logger,
            on_restart=record_restart,
            on_step=runs.stop_if_requested,
            on_checkpoint=saver,
            resume=checkpoint,
            hardware=hardware,
        )
        runs.stop_if_requested()
    except TrainingFailed:
        raise
    except BaseException:
        print(saver.hint(run_id, model.kind), file=sys.stderr, flush=True)
        raise
    return result


def _register(
    run_id: str,
    request: TrainingRequest,
    description: str,
    data: ImageData,
    result: TrainResult,
    logger: EpochLogger,
) -> Registered:
    """The final reconstructions, then the model logged and registered with the run's
    description."""
    mlflow.log_image(logger.image(result.model), artifact_file=names.RECONSTRUCTION_FILE)
    registration = Registration(
        request.registered_model,
        request.alias,
        name=names.config_name(request.model.kind, request.model.latent_dim),
        description=description,
        tags={**request.tags, "run_id": run_id},
    )
    example = to_unit(data.test.images[:2]).numpy()
    return log_and_register(result.model, example, registration)
