"""Tensor helpers shared by training, evaluation, the latent metrics and the tracking
layer: the model's input format, evaluation in batches (always in float32), and the CPU's
handling of subnormal floats. Devices and precision: pipeline.training.hardware."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

EVAL_BATCH = 1000
PIXEL_MAX = 255.0  # uint8 white


def flush_denormals() -> None:
    """Treat subnormal floats as zero on the CPU. Gradients through saturated sigmoids and
    Adam's second moments drift into them, which x86 CPUs process many times slower (a
    small run took 3x as long); flushing changes no logged loss in its first five digits.
    The setting is per thread and torch's worker threads copy it when they are created,
    so entry points call this first, before torch runs anything in parallel."""
    torch.set_flush_denormal(True)


def float32(device: torch.device) -> contextlib.AbstractContextManager:
    """Evaluation's context: float32 arithmetic, even inside a caller's autocast, so that
    recorded MSEs are computed alike whatever the training precision."""
    return torch.autocast(device.type, enabled=False)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as float in [0, 1], same shape."""
    return images.float().div_(PIXEL_MAX)


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (n, C, H, W) -> float (n, C, H, W) in [0, 1] on device, channels_last."""
    x = to_unit(images.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    return model.to(device=device, memory_format=torch.channels_last)


@torch.inference_mode()
def squared_error(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    codes: list[torch.Tensor] | None = None,
    total: torch.Tensor | None = None,
) -> torch.Tensor:
    """The summed squared error of model(x) against x, a float64 scalar tensor. Given
    `total` (what an earlier call returned for the images before x), goes on from it: a
    pass split at a multiple of batch_size gives the one pass's sum, bit for bit. Given a
    list as `codes`, appends each batch's codes to it (float, on x's device) in the same
    pass. In float32 whatever the autocast around it."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device) if total is None else total
    with float32(x.device):
        for i in range(0, len(x), batch_size):
            batch = x[i : i + batch_size]
            z = model.encode(batch)  # forward() is decode(encode(x)): the same numbers
            if codes is not None:
                codes.append(z.float())  # on x's device: no copy to the host per batch
            total = total + F.mse_loss(model.decode(z), batch, reduction="sum").double()
    return total


def per_pixel(total: torch.Tensor, x: torch.Tensor) -> float:
    """A squared_error sum over x as the per-sample, per-pixel mean."""
    return total.item() / x[0].numel() / len(x)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    codes: list[torch.Tensor] | None = None,
) -> float:
    """Per-sample, per-pixel mean squared error of model(x) against x, in float32. Given a
    list as `codes`, appends each batch's codes to it (float, on x's device) in the same pass."""
    return per_pixel(squared_error(model, x, batch_size, codes), x)


@torch.inference_mode()
def reconstruct(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Reconstructions of uint8 images (n, C, H, W) as float (n, C, H, W) in [0, 1] on the
    CPU."""
    model.eval()
    device = next(model.parameters()).device
    with float32(device):
        return model(to_model_input(images, device)).float().cpu()
