"""One tracked training run: the pipeline's loop with MLflow plugged in through callbacks."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict

import mlflow
import numpy as np
import torch
from torch import nn

from pipeline.config import DataConfig, ModelConfig, TrainConfig
from pipeline.data import Mnist, load_mnist
from pipeline.images import reconstruction_grid, sample_indices
from pipeline.latent import encode_all, latent_quality
from pipeline.models import build_model, count_params
from pipeline.train import (
    PROBE_SIZE,
    CollapseEvent,
    EpochResult,
    TrainResult,
    fit,
    output_spread,
    reconstruct,
    resolve_device,
    to_model_input,
)
from tracking import names
from tracking.registry import log_and_register
from tracking.runs import (
    code_version,
    interruptible,
    log_new_params,
    stop_if_requested,
    tracked_run,
)


class EpochLogger:
    """on_epoch_end callback: the epoch's metrics and a reconstruction image, at step=epoch."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.samples = samples
        self.originals = samples.float().numpy() / 255.0
        self.seconds = 0.0  # time spent logging, for the tracking-overhead figure

    def image(self, model: nn.Module) -> np.ndarray:
        return reconstruction_grid([self.originals, reconstruct(model, self.samples).numpy()])

    def __call__(self, result: EpochResult, model: nn.Module) -> None:
        start = time.perf_counter()
        metrics = {
            names.TRAIN_MSE: result.train_mse,
            names.TEST_MSE: result.test_mse,
            names.TRAIN_EVAL_MSE: result.train_eval_mse,
            names.EPOCH_SECONDS: result.seconds,
            names.IMAGES_PER_SECOND: result.images_per_second,
        }
        mlflow.log_metrics(metrics, step=result.epoch)
        mlflow.log_image(self.image(model), key=names.RECONSTRUCTION_KEY, step=result.epoch)
        self.seconds += time.perf_counter() - start


def record_collapse(event: CollapseEvent) -> None:
    """on_collapse callback: a visible line on the run for every restart."""
    line = (
        f"seed {event.seed}: constant output at epoch {event.epoch}, step {event.step} "
        f"(output std {event.output_std:.1e}, loss {event.loss:.4f}); restarted with seed "
        f"{event.seed + 1}"
    )
    run = mlflow.active_run()
    previous = run and mlflow.get_run(run.info.run_id).data.tags.get(names.TAG_COLLAPSE_LOG)
    mlflow.set_tag(names.TAG_COLLAPSE_LOG, f"{previous}\n{line}" if previous else line)
    mlflow.log_metric(names.COLLAPSE_RESTARTS, event.attempt + 1, step=event.attempt + 1)


def run_params(model: ModelConfig, data: DataConfig, train: TrainConfig) -> dict[str, object]:
    """Everything that defines a training run, as logged: limits of None are logged as 0
    (all images), the convention of the command line."""
    params = {"model_kind": model.kind, "latent_dim": model.latent_dim, **asdict(train)}
    params.update(
        data_dir=data.data_dir, train_limit=data.train_limit or 0, test_limit=data.test_limit or 0
    )
    return params


def _log_dataset(data: Mnist) -> None:
    for split, context in ((data.train, "training"), (data.test, "testing")):
        with warnings.catch_warnings():  # MLflow registers its local source class twice
            warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
            dataset = mlflow.data.from_numpy(
                split.images.numpy(),
                targets=split.labels.numpy(),
                source=data.source,
                name=f"mnist-{context}",
                digest=data.digest,
            )
        mlflow.log_input(dataset, context=context)


def _log_summary(result: TrainResult, model: nn.Module, seconds: float) -> None:
    final = result.history[-1]
    best = min(result.history, key=lambda r: r.test_mse)
    counts = count_params(model)
    mlflow.log_metrics(
        {
            names.FINAL_TRAIN_MSE: result.final_train_mse,
            names.FINAL_TEST_MSE: final.test_mse,
            names.BEST_TEST_MSE: best.test_mse,
            names.BEST_EPOCH: best.epoch,
            names.GAP: final.test_mse - result.final_train_mse,
            names.PARAMS_TOTAL: counts.total,
            names.PARAMS_ENCODER: counts.encoder,
            names.PARAMS_DECODER: counts.decoder,
            names.TRAIN_SECONDS: seconds,
            names.COLLAPSE_RESTARTS: len(result.collapses),
        }
    )
    mlflow.set_tag(names.TAG_INIT_SEED, str(result.init_seed))


def _log_latent_quality(model: nn.Module, data: Mnist, device: torch.device) -> None:
    """kNN accuracy and silhouette of the final model's codes, and the spread of its
    outputs (collapse), as summary metrics."""
    start = time.perf_counter()
    with interruptible():
        spread = output_spread(model, to_model_input(data.test.images[:PROBE_SIZE], device))
        train_codes, test_codes = (
            encode_all(model, s.images, device) for s in (data.train, data.test)
        )
        accuracy, silhouette = latent_quality(
            train_codes, data.train.labels.numpy(), test_codes, data.test.labels.numpy()
        )
    mlflow.log_metrics(
        {
            names.KNN_ACCURACY: accuracy,
            names.SILHOUETTE: silhouette,
            names.LATENT_SECONDS: time.perf_counter() - start,
            names.OUTPUT_STD: spread,
        }
    )


def train_tracked(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    registered_model: str = names.DEFAULT_REGISTERED_MODEL,
) -> str:
    """Train one configuration in an MLflow run and register the model. Returns the run id."""
    alias = names.run_name(model_cfg.kind, model_cfg.latent_dim)
    tags = {
        names.TAG_KIND: model_cfg.kind,
        names.TAG_LATENT: str(model_cfg.latent_dim),
        names.TAG_CODE_VERSION: code_version(),
        names.TAG_ROLE: names.ROLE_TRAIN,
    }
    with tracked_run(alias, tags) as run:
        log_new_params(run_params(model_cfg, data_cfg, train_cfg))
        mlflow.log_param("device_used", str(resolve_device(train_cfg.device)))
        print(
            f"run {run.info.run_id} ({alias}): training {model_cfg.kind} autoencoder, "
            f"latent {model_cfg.latent_dim}, {train_cfg.epochs} epochs"
        )
        with interruptible():
            data = load_mnist(data_cfg.data_dir, data_cfg.train_limit, data_cfg.test_limit)
        logger = EpochLogger(data.test.images[sample_indices(data.test.labels)])
        start = time.perf_counter()
        _log_dataset(data)
        logger.seconds += time.perf_counter() - start
        start = time.perf_counter()
        result = fit(
            lambda: build_model(model_cfg.kind, model_cfg.latent_dim),
            data,
            train_cfg,
            on_epoch_end=logger,
            on_collapse=record_collapse,
            on_step=stop_if_requested,
        )
        stop_if_requested()
        _log_summary(result, result.model, time.perf_counter() - start)
        _log_latent_quality(result.model, data, resolve_device(train_cfg.device))
        stop_if_requested()  # the last point at which the run can still end KILLED
        start = time.perf_counter()
        mlflow.log_image(logger.image(result.model), artifact_file=names.RECONSTRUCTION_FILE)
        example = (data.test.images[:2].unsqueeze(1).float() / 255.0).numpy()
        version = log_and_register(
            result.model,
            example,
            registered_model,
            alias,
            tags={**tags, "run_id": run.info.run_id},
        )
        mlflow.set_tag(names.TAG_REGISTERED_VERSION, version)
        mlflow.log_metric(names.TRACKING_SECONDS, logger.seconds + time.perf_counter() - start)
        print(
            f"registered {registered_model} version {version} as "
            f"models:/{registered_model}@{alias}; test MSE {result.history[-1].test_mse:.5f}"
        )
        return run.info.run_id
