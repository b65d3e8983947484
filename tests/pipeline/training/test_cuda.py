"""Training on a CUDA device, in both precisions: skipped, with its reason, where there is none."""

import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.training.data import load_mnist
from pipeline.training.hardware import FORWARD_PRECISIONS, bf16_supported
from pipeline.training.models import build_model
from pipeline.training.train import fit

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device: torch.cuda.is_available() is False here",
)


@pytest.mark.parametrize("precision", FORWARD_PRECISIONS)
def test_training_on_cuda_learns_with_the_model_and_data_on_the_device(mnist_dir, precision):
    if precision == "bf16" and not bf16_supported(torch.device("cuda")):
        pytest.skip("torch.cuda.is_bf16_supported() is False for this GPU")
    data = load_mnist(mnist_dir, train_limit=2048, test_limit=512, log=lambda _: None)
    cfg = TrainConfig(epochs=3, batch_size=64, device="cuda", precision=precision)
    devices = []
    result = fit(
        lambda: build_model("conv", 10),
        data,
        cfg,
        on_epoch_end=lambda r, model: devices.append(next(model.parameters()).device.type),
        log=lambda _: None,
    )
    tests = [r.test_mse for r in result.history]
    assert tests[-1] < 0.7 * tests[0], tests
    assert devices == ["cuda"] * 3
    weight = result.model.encoder[2].weight  # 64x32x3x3
    assert weight.dtype == torch.float32
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert result.test_codes.device.type == "cpu" and len(result.test_codes) == 512
