"""The MLflow UI in headless Chromium over a small study's store, served by a real
`mlflow server`: the experiment's training runs by name, a training run's description
and system metrics, the comparison's report.html in the artifact view, and the Models
tab naming the configurations. Every screen is screenshotted and must not be blank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.browser import chrome, page_text, screenshot, wait_for
from tests.servers import MlflowServer
from tests.tracking.conftest import make_store, small_args
from tracking import names

pytestmark = pytest.mark.slow

ML_VIEW = "workflowType=machine_learning"  # the UI's "Model training" side
TRAINING_RUNS = ["conv-d3-s0", "linear-d10-s0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory, mnist_dir):
    """A one-configuration study (and the linear baseline) through `mlflow run`, as the
    README runs it, into a server over SQLite; yields the server, experiment id and runs."""
    root = tmp_path_factory.mktemp("ui")
    server = MlflowServer(f"sqlite:///{root / 'backend.db'}", root).start()
    try:
        store = make_store(root, server.url)
        store.env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"  # samples in a short run
        params = small_args(mnist_dir, epochs=2, latent_dims="3")
        result = store.mlflow_run("main", timeout=900, **params)
        assert result.returncode == 0, result.stderr[-3000:]
        runs = {r.info.run_name: r for r in store.runs()}
        yield server, runs["conv-d3-s0"].info.experiment_id, runs
    finally:
        server.stop()


def shows(driver, *texts: str) -> Callable[[], bool]:
    return lambda: all(t in page_text(driver) for t in texts)


def save_screen(driver, folder: Path, name: str) -> None:
    """Keep the screenshot beside the test's files and check it is not blank."""
    image = screenshot(driver, save_as=folder / f"{name}.png")
    assert image.std() > 10, f"the {name} screenshot is blank"


def test_study_in_the_mlflow_ui(study, chromium, tmp_path):
    from selenium.webdriver.common.by import By

    server, experiment_id, runs = study
    experiment = f"{server.url}/#/experiments/{experiment_id}"
    training, comparison = runs["conv-d3-s0"], next(r for n, r in runs.items() if "comparison" in n)
    with chrome(*chromium) as driver:
        # The experiment's runs: the sweep, and its training runs once expanded.
        driver.get(f"{experiment}/runs?{ML_VIEW}")
        wait_for(driver, shows(driver, names.EXPERIMENT_NAME, "sweep-"), "the sweep run")
        expand = "//a[starts-with(normalize-space(.),'sweep-')]/ancestor::div[@role='row'][1]"
        expand += "//button[contains(@data-component-id,'runnamecellrenderer')]"
        driver.find_element(By.XPATH, expand).click()
        wait_for(driver, shows(driver, *TRAINING_RUNS), "the training runs by name")
        save_screen(driver, tmp_path, "runs")

        # A training run: its description, then its system metrics.
        driver.get(f"{experiment}/runs/{training.info.run_id}?{ML_VIEW}")
        described = ("Convolutional autoencoder", "Final test MSE", "No restart")
        wait_for(driver, shows(driver, "conv-d3-s0", *described), "the run's description")
        save_screen(driver, tmp_path, "training-run")
        driver.get(f"{experiment}/runs/{training.info.run_id}/system-metrics?{ML_VIEW}")
        wait_for(driver, shows(driver, "cpu_utilization_percentage"), "the CPU chart")
        memory = "system/system_memory_usage_megabytes"  # charted below the fold
        assert memory in training.data.metrics, sorted(training.data.metrics)
        save_screen(driver, tmp_path, "system-metrics")

        # The comparison's report, rendered by the artifact view (in an iframe).
        driver.get(f"{experiment}/runs/{comparison.info.run_id}/artifacts/report.html?{ML_VIEW}")
        frame = wait_for(
            driver, lambda: driver.find_elements(By.TAG_NAME, "iframe"), "the report's frame"
        )
        driver.switch_to.frame(frame[0])
        wait_for(driver, shows(driver, "By configuration", "conv-d3", "linear-d10"), "report")
        driver.switch_to.default_content()
        save_screen(driver, tmp_path, "report")

        # The Models tab: one logged model per configuration, named after it.
        driver.get(f"{experiment}/models?{ML_VIEW}")
        wait_for(driver, shows(driver, "conv-d3", "linear-d10", *TRAINING_RUNS), "the models")
        save_screen(driver, tmp_path, "models")
