"""A registered model name, version or alias that does not exist: an error naming it."""

import pytest
from mlflow import MlflowClient

from tracking.registry import RegistryError, load_model, require_registered_model


@pytest.fixture
def registry(tmp_path, monkeypatch) -> MlflowClient:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("autoencoders")
    return client


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("models:/nope@champion", "name=nope"),
        ("models:/autoencoders@ghost", "alias ghost"),
        ("models:/autoencoders/7", "version=7"),
    ],
)
def test_loading_what_is_not_registered_names_it(registry, uri, named):
    with pytest.raises(RegistryError, match=f"no registered model at {uri}: .*{named}"):
        load_model(uri)


def test_require_registered_model(registry):
    require_registered_model("autoencoders")
    with pytest.raises(RegistryError, match="no registered model 'nope' at sqlite:"):
        require_registered_model("nope")
