"""Shared fixtures."""

import os
from pathlib import Path

import pytest

from pipeline.training.data import ensure_mnist
from pipeline.training.hardware import prepare_process
from pipeline.training.tensors import flush_denormals
from tests.browser import ensure_chromium

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    flush_denormals()  # as the entry points do, before torch starts its worker threads
    prepare_process()  # and before any CUDA work


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A data dir holding the verified MNIST raw files (the repo's git-ignored ./data by default).

    Set AE_TEST_DATA_DIR to use another folder.
    """
    data_dir = Path(os.environ.get("AE_TEST_DATA_DIR", REPO_ROOT / "data"))
    ensure_mnist(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed first where missing (as CI needs)."""
    return ensure_chromium()
