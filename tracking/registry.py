"""Logging, registering and loading models.

Models are logged in MLflow's "pickle" format with the ``pipeline`` package shipped as
code (``code_paths``): the loaded object is the project's own ``nn.Module`` with
``encode``/``decode``, and loads on a machine that does not have this repository. (The
default "pt2" format exports only ``forward`` and drops ``encode``.) Unpickling runs
code, so load models only from a registry you trust.
"""

from __future__ import annotations

import cloudpickle
import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from torch import nn

from tracking import names
from tracking.runs import PROJECT_ROOT


class RegistryError(LookupError):
    """A registered model name, version or alias does not exist."""


def _requirements() -> list[str]:
    # Stated rather than inferred: inference loads the model in a subprocess, slow.
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"cloudpickle=={cloudpickle.__version__}",
        f"numpy=={np.__version__}",
    ]


def log_and_register(
    model: nn.Module, example: np.ndarray, registered_model: str, alias: str, tags: dict
) -> str:
    """Log the model to the active run, register it as a new version of registered_model
    and point `alias` at that version. Returns the version."""
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name=names.MODEL_NAME,
        serialization_format="pickle",
        code_paths=[str(PROJECT_ROOT / "pipeline")],
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=_requirements(),
        registered_model_name=registered_model,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_model, version, key, str(value))
    client.set_registered_model_alias(registered_model, alias, version)
    return version


def set_alias(registered_model: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(registered_model, alias, version)


def model_uri(registered_model: str, alias: str) -> str:
    return f"models:/{registered_model}@{alias}"


def require_registered_model(name: str) -> None:
    """RegistryError naming the model and the registry when there is no such model."""
    try:
        MlflowClient().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(
                f"no registered model {name!r} at {mlflow.get_registry_uri()}: training runs "
                f"register under the name given as registered_model "
                f"(default {names.DEFAULT_REGISTERED_MODEL})"
            ) from None
        raise


def load_model(uri: str) -> nn.Module:
    """Load a registered model (``models:/NAME@ALIAS``) as the project's nn.Module; a
    name or alias that does not exist gives a RegistryError naming it."""
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu")
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RegistryError(f"no registered model at {uri}: {exc.message}") from exc
        raise


def version_of_run(registered_model: str, run_id: str) -> str:
    """The version of registered_model that run_id logged; RegistryError if there is none."""
    found = MlflowClient().search_model_versions(
        f"name = '{registered_model}' and run_id = '{run_id}'"
    )
    if not found:
        raise RegistryError(f"run {run_id} registered no version of {registered_model!r}")
    return str(max(int(v.version) for v in found))


def version_uri(registered_model: str, version: str) -> str:
    return f"models:/{registered_model}/{version}"
