"""The project against real `mlflow server` processes on 127.0.0.1, over SQLite and over a
throwaway PostgreSQL cluster, with artifacts proxied into a temporary folder: a parallel
sweep with `main`, the comparison, the champion loaded in a fresh process, and the
server going away."""

from __future__ import annotations

import json
import time

import pytest

from tests.servers import MlflowServer, Postgres
from tests.system import free_port
from tests.tracking.conftest import Store, cli_command, cli_flags, make_store, small_args
from tracking import names

pytestmark = pytest.mark.slow

LOAD = """
import json, sys, mlflow, torch
model = mlflow.pytorch.load_model(sys.argv[1], map_location="cpu")
print(json.dumps({"latent_dim": model.encode(torch.zeros(2, 1, 28, 28)).shape[1]}))
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    postgres = Postgres() if request.param == "postgresql" else None
    backend = postgres.uri if postgres else f"sqlite:///{root / 'backend.db'}"
    running = MlflowServer(backend, root).start()
    try:
        yield running
    finally:
        running.stop()
        if postgres:
            postgres.stop()


def every_epoch_once(store: Store, run, epochs: int) -> None:
    for key in names.EPOCH_METRICS:
        steps = sorted(m.step for m in store.client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, epochs + 1)), (run.info.run_name, key)


def test_parallel_main_compare_and_champion_through_the_server(server, tmp_path, mnist_dir):
    store = make_store(tmp_path, server.url)
    params = small_args(mnist_dir, epochs=2, latent_dims="3,10,20", parallel=4)
    result = store.mlflow_run("main", timeout=1200, **params)
    assert result.returncode == 0, result.stderr[-3000:]

    training = store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_TRAIN}'")
    assert sorted(r.info.run_name for r in training) == [
        "conv-d10-s0",
        "conv-d20-s0",
        "conv-d3-s0",
        "linear-d10-s0",
    ]
    assert max(r.info.start_time for r in training) < min(r.info.end_time for r in training)
    for run in training:
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
        every_epoch_once(store, run, 2)

    (comparison,) = store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_COMPARISON}'")
    assert comparison.info.status == "FINISHED"
    files = {a.path for a in store.client.list_artifacts(comparison.info.run_id)}
    assert {"report.csv", "report.html", "study.html", "interpolations.png"} <= files
    assert any((server.root / "artifacts").rglob("report.csv"))  # in the server's folder

    uri = f"models:/{names.DEFAULT_REGISTERED_MODEL}@{names.CHAMPION_ALIAS}"
    loaded = store.python(LOAD, uri, timeout=180)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    champion = comparison.data.tags[names.TAG_CHAMPION_RUN]
    (picked,) = [r for r in training if r.info.run_id == champion]
    expected = int(picked.data.params["latent_dim"])
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {"latent_dim": expected}


def test_server_stopping_mid_run_fails_it_and_a_resume_completes_it(server, tmp_path, mnist_dir):
    store = make_store(tmp_path, server.url)
    store.env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # give up at once while it is away
    epochs = 40
    params = small_args(mnist_dir, latent_dim=7, epochs=epochs, train_limit=2048)
    proc = store.popen(cli_command("train", *cli_flags(params)))
    this_run = "attributes.run_name = 'conv-d7-s0'"  # the server holds other tests' runs
    try:
        deadline = time.time() + 300
        while not ((runs := store.runs(this_run)) and names.TEST_MSE in runs[0].data.metrics):
            assert time.time() < deadline and proc.poll() is None, store.root / "process.log"
            time.sleep(0.5)
        server.stop()
        proc.wait(timeout=120)
    finally:
        proc.kill()
        if server.process is None:
            server.start()
    log = (store.root / "process.log").read_text()
    assert proc.returncode == 1, log[-3000:]
    assert "error: " in log and server.url in log  # a one-line reason naming the server
    assert "resume_run_id=" in log  # and how to continue

    (run,) = store.runs(this_run)
    checkpoint = store.client.list_artifacts(run.info.run_id, names.CHECKPOINT_DIR)
    assert [a.path for a in checkpoint] == [f"{names.CHECKPOINT_DIR}/{names.CHECKPOINT_FILE}"]
    del store.env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    resumed = store.mlflow_run("train", resume_run_id=run.info.run_id)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = store.client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    every_epoch_once(store, run, epochs)


def test_unreachable_server_is_reported_within_half_a_minute(tmp_path, mnist_dir):
    store = make_store(tmp_path, f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    result = store.cli("train", *cli_flags(small_args(mnist_dir)), timeout=120)
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: no MLflow tracking server answers at {store.uri}")
    assert elapsed < 40
    assert list(tmp_path.iterdir()) == []  # nothing was started or written
