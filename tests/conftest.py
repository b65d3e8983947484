"""Shared fixtures."""

import os
from pathlib import Path

import pytest

from pipeline.training.datasets import fashion_mnist
from pipeline.training.datasets.fashion_mnist import FashionMnist
from pipeline.training.datasets.mnist import Mnist
from pipeline.training.hardware import prepare_process
from pipeline.training.tensors import flush_denormals
from tests.browser import ensure_chromium
from tests.system import apt_install

REPO_ROOT = Path(__file__).resolve().parents[1]


def tests_data_dir() -> Path:
    """The tests' data dir: AE_TEST_DATA_DIR, else the repo's git-ignored ./data."""
    return Path(os.environ.get("AE_TEST_DATA_DIR", REPO_ROOT / "data"))


def pytest_configure(config):
    flush_denormals()  # as the entry points do, before torch starts its worker threads
    prepare_process()  # and before any CUDA work


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A data dir holding the verified MNIST raw files (the repo's git-ignored ./data by default).

    Set AE_TEST_DATA_DIR to use another folder.
    """
    data_dir = tests_data_dir()
    Mnist().ensure(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The tests' data dir holding the verified Fashion-MNIST raw files, copied from
    Debian's package dataset-fashion-mnist, installed first where missing (as CI needs)."""
    if not fashion_mnist.DEBIAN_DIR.is_dir():
        apt_install(fashion_mnist.DEBIAN_PACKAGE)
    data_dir = tests_data_dir()
    FashionMnist().ensure(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed first where missing (as CI needs)."""
    return ensure_chromium()
