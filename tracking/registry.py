"""Logging, registering and loading models.

Models are logged in MLflow's "pickle" format with the ``pipeline`` package shipped as
code (``code_paths``): the loaded object is the project's own ``nn.Module`` with
``encode``/``decode``, and loads on a machine that does not have this repository. (The
default "pt2" format exports only ``forward`` and drops ``encode``.) Unpickling runs
code, so load models only from a registry you trust.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

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


# MLflow warns about the pickle format at every model it saves (five times a study). The
# project says it once per command, with its reason; a sweep says it for its steps,
# which it tells through this variable.
PICKLE_NOTED = "LATENT_STUDY_PICKLE_NOTED"
PICKLE_NOTE = (
    "note: models are saved in MLflow's pickle format, so that loading one gives the "
    "project's nn.Module with encode() and decode(); unpickling runs code, so load models "
    "only from a registry you trust (docs/models.md)"
)


class _PickleWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")


logging.getLogger("mlflow.pytorch").addFilter(_PickleWarningFilter())


def note_pickle_format() -> None:
    """Print PICKLE_NOTE, once for this process and the processes it starts."""
    if not os.environ.get(PICKLE_NOTED):
        print(PICKLE_NOTE, flush=True)
        os.environ[PICKLE_NOTED] = "1"


def _requirements() -> list[str]:
    # Stated rather than inferred: inference loads the model in a subprocess, slow.
    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"cloudpickle=={cloudpickle.__version__}",
        f"numpy=={np.__version__}",
    ]


@dataclass(frozen=True)
class Registered:
    """A model logged by a run and registered."""

    model_id: str
    """The logged model's id (MLflow 3): what its metrics are linked to."""
    version: str
    uri: str
    """The alias's models:/ URI."""


REGISTERED_MODEL_DESCRIPTION = f"""The autoencoders of the latent-size study on one \
dataset (conv, and the linear baseline), one version per training run.

- Each training run's model: `models:/NAME@conv-d100-s0` (configuration and seed).
- The comparison's pick: `models:/NAME@{names.CHAMPION_ALIAS}`.

Load with `mlflow.pytorch.load_model(uri)`: it returns the project's `nn.Module` with \
`encode` and `decode`. The models are pickled; load them only from a registry you trust."""


@dataclass(frozen=True)
class Registration:
    """Where a trained model goes: registered model, alias, logged name, description, tags."""

    registered_model: str
    alias: str
    name: str
    description: str
    tags: dict[str, str]


def log_and_register(model: nn.Module, example: np.ndarray, to: Registration) -> Registered:
    """Log the model to the active run under to.name, register it as a new version of
    to.registered_model and point to.alias at that version."""
    registered_model, alias = to.registered_model, to.alias
    note_pickle_format()
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name=to.name,
        serialization_format="pickle",
        code_paths=[str(PROJECT_ROOT / "pipeline")],
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=_requirements(),
        registered_model_name=registered_model,
    )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in to.tags.items():
        client.set_model_version_tag(registered_model, version, key, str(value))
    client.set_registered_model_alias(registered_model, alias, version)
    uri = f"models:/{registered_model}@{alias}"
    by_version = version_uri(registered_model, version)
    loading = f'Load it with `mlflow.pytorch.load_model("{uri}")` (or `{by_version}`).'
    client.update_model_version(registered_model, version, f"{to.description}\n\n{loading}")
    describe_registered_model(registered_model)
    return Registered(info.model_id, version, uri)


def describe_registered_model(registered_model: str) -> None:
    """Give the registered model its description, unless it has one."""
    client = MlflowClient()
    if not client.get_registered_model(registered_model).description:
        text = REGISTERED_MODEL_DESCRIPTION.replace("NAME", registered_model)
        client.update_registered_model(registered_model, text)


def set_alias(registered_model: str, alias: str, version: str) -> None:
    MlflowClient().set_registered_model_alias(registered_model, alias, version)


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
