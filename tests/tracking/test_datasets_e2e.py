"""Data other than MNIST through the entry points: a real Fashion-MNIST slice through
`mlflow run -e train`, and two folders of generated PNGs (RGB with class folders; greyscale
with train/ and test/ and no classes) through `main` and its comparison, one study page
for both."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.training.models import ConvAutoencoder, count_params
from tests.tracking.conftest import Store, make_store, small_args
from tracking import names

pytestmark = pytest.mark.slow

LOAD_AND_SCORE = """
import json, sys
import mlflow, torch, torch.nn.functional as F
from pipeline.config import DataConfig
from pipeline.training import datasets
model = mlflow.pytorch.load_model(sys.argv[1], map_location="cpu")
cfg = DataConfig(sys.argv[2], sys.argv[3], test_limit=int(sys.argv[4]))
x = datasets.load(cfg, log=lambda _: None).test.images.float() / 255
with torch.inference_mode():
    mse = F.mse_loss(model(x), x, reduction="sum").double().item() / x.numel()
print(json.dumps({"mse": mse, "shape": list(model(x[:2]).shape)}))
"""


@pytest.fixture(scope="module")
def fashion(tmp_path_factory, fashion_dir):
    """One conv run on a Fashion-MNIST slice through `mlflow run . -e train`."""
    store = make_store(tmp_path_factory.mktemp("fashion-store"))
    args = small_args(fashion_dir, dataset="fashion-mnist", latent_dim=10, test_limit=512)
    result = store.mlflow_run("train", **args)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = store.runs()
    return store, run, args


def test_a_fashion_mnist_run_is_named_tagged_and_registered_as_its_dataset(fashion):
    store, run, _ = fashion
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "fashion-mnist-conv-d10-s0"
    assert run.data.tags[names.TAG_DATASET] == "fashion-mnist"
    assert run.data.params["dataset"] == "fashion-mnist"
    assert run.data.params["registered_model"] == "auto"  # as asked: the dataset's own
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"fashion-mnist-training", "fashion-mnist-testing"}
    version = store.client.get_model_version_by_alias(
        "fashion-mnist-autoencoder", "fashion-mnist-conv-d10-s0"
    )
    assert version.run_id == run.info.run_id
    assert run.data.metrics[names.PARAMS_TOTAL] == count_params(ConvAutoencoder(10)).total
    assert 0 <= run.data.metrics[names.KNN_ACCURACY] <= 1  # it has classes
    assert "fashion-mnist training images (1x28x28)" in run.data.tags[names.TAG_DESCRIPTION]
    assert "MNIST training" not in run.data.tags[names.TAG_DESCRIPTION]


def test_a_reloaded_fashion_mnist_model_reproduces_its_logged_test_mse(fashion):
    store, run, args = fashion
    uri = "models:/fashion-mnist-autoencoder@fashion-mnist-conv-d10-s0"
    out = store.python(LOAD_AND_SCORE, uri, args["data_dir"], "fashion-mnist", args["test_limit"])
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["mse"] == pytest.approx(run.data.metrics[names.FINAL_TEST_MSE], rel=1e-5)
    assert loaded["shape"] == [2, 1, 28, 28]


def shapes(rng: np.random.Generator, kind: str, size: int = 16) -> np.ndarray:
    """An RGB image of one of two classes: horizontal bars, or a square block."""
    image = np.zeros((size, size, 3), np.uint8)
    colour = rng.integers(80, 256, 3)
    if kind == "bars":
        for row in rng.choice(size, 4, replace=False):
            image[row] = colour
    else:
        top, left = rng.integers(0, size - 6, 2)
        image[top : top + 6, left : left + 6] = colour
    return image


def write_folders(root: Path) -> tuple[Path, Path]:
    """`shapes`: RGB PNGs in class folders (split by the folder rule); `grey`: greyscale
    PNGs in train/ and test/, without classes."""
    rng = np.random.default_rng(0)
    colour, grey = root / "shapes", root / "grey"
    for kind in ("bars", "blocks"):
        (colour / kind).mkdir(parents=True)
        for i in range(60):
            Image.fromarray(shapes(rng, kind)).save(colour / kind / f"{i:03d}.png")
    for split, count in (("train", 96), ("test", 16)):
        (grey / split).mkdir(parents=True)
        for i in range(count):
            image = shapes(rng, ("bars", "blocks")[i % 2]).max(axis=2)
            Image.fromarray(image, mode="L").save(grey / split / f"{i:03d}.png")
    return colour, grey


@pytest.fixture(scope="module")
def folders_swept(tmp_path_factory):
    """`main` over both folders, one latent size and the linear baseline each."""
    root = tmp_path_factory.mktemp("folders")
    colour, grey = write_folders(root / "images")
    store = make_store(root)
    result = store.mlflow_run(
        "main",
        datasets=f"{colour},{grey}",
        latent_dims="3",
        linear_dim="3",
        epochs="2",
        batch_size="16",
        data_dir=str(root / "data"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return store, result


def test_main_trains_every_folder_with_a_model_shaped_by_its_images(folders_swept):
    store, _ = folders_swept
    runs = {r.info.run_name: r for r in store.runs(f"tags.{names.TAG_ROLE} = 'train'")}
    assert set(runs) == {
        "shapes-conv-d3-s0",
        "shapes-linear-d3-s0",
        "grey-conv-d3-s0",
        "grey-linear-d3-s0",
    }
    for name, run in runs.items():
        dataset = name.split("-")[0]
        assert run.info.status == "FINISHED", name
        assert run.data.tags[names.TAG_DATASET] == dataset
        assert run.data.params["registered_model"] == f"{dataset}-autoencoder"
    assert runs["shapes-linear-d3-s0"].data.metrics[names.PARAMS_TOTAL] == 2 * 3 * 16 * 16 * 3
    assert runs["grey-linear-d3-s0"].data.metrics[names.PARAMS_TOTAL] == 2 * 16 * 16 * 3
    conv = count_params(ConvAutoencoder(3, (3, 16, 16))).total
    assert runs["shapes-conv-d3-s0"].data.metrics[names.PARAMS_TOTAL] == conv
    assert names.KNN_ACCURACY in runs["shapes-conv-d3-s0"].data.metrics  # two classes
    assert names.KNN_ACCURACY not in runs["grey-conv-d3-s0"].data.metrics  # none


def test_each_folder_has_its_own_registered_model_and_champion(folders_swept):
    store, _ = folders_swept
    for dataset in ("shapes", "grey"):
        champion = store.client.get_model_version_by_alias(
            f"{dataset}-autoencoder", names.CHAMPION_ALIAS
        )
        run = store.client.get_run(champion.run_id)
        assert run.data.tags[names.TAG_DATASET] == dataset


def download(store: Store, run_id: str, path: str, to: Path) -> str:
    local = store.client.download_artifacts(run_id, path, str(to))
    return Path(local).read_text()


def test_one_study_page_answers_across_the_folders(folders_swept, tmp_path):
    store, result = folders_swept
    (comparison,) = store.runs(f"tags.{names.TAG_ROLE} = '{names.ROLE_COMPARISON}'")
    assert comparison.info.status == "FINISHED"
    page = download(store, comparison.info.run_id, "study.html", tmp_path)
    assert "shapes" in page and "grey" in page and "PSNR" in page
    text = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # the page, not plotly.js
    assert "digit" not in text.lower() and "MNIST" not in text
    assert "Error" not in result.stdout[-2000:]
