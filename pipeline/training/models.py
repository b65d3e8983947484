"""The exercise's autoencoders as plain ``nn.Module``s with ``encode``/``decode``/``forward``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import MODEL_KINDS, ModelConfig

MNIST_SHAPE = (1, 28, 28)
"""C, H, W of the exercise's images; the default of every model."""
MIN_SIDE = 8
"""The smallest height or width: three stride-2 convolutions leave one pixel of it."""

CONV_INITS = ("he", "pytorch")
"""How ConvAutoencoder's weights start: "he" (the default; He et al. 2015, for ReLU
networks) or "pytorch" (each layer's own default, as in the exercise).
docs/training-health.md measures both."""

Shape = tuple[int, int, int]


def check_shape(shape: Shape) -> None:
    """ValueError unless shape is C, H, W with C in 1..3 and both sides at least MIN_SIDE."""
    c, h, w = shape
    if not 1 <= c <= 3 or min(h, w) < MIN_SIDE:
        raise ValueError(
            f"images must be C x H x W with C 1 to 3 and H, W at least {MIN_SIDE} (got "
            f"{'x'.join(map(str, shape))})"
        )


def halvings(side: int) -> list[int]:
    """A side's length before and after each of the encoder's three stride-2 convolutions
    (kernel 3, padding 1: n -> ceil(n / 2)); 28 -> [28, 14, 7, 4]."""
    sides = [side]
    for _ in range(3):
        sides.append((sides[-1] + 1) // 2)
    return sides


def output_paddings(side: int) -> list[int]:
    """Each transposed convolution's output_padding (kernel 3, stride 2, padding 1: n ->
    2n - 1 + p), from the innermost out, so that the decoder gives back every encoder
    size exactly; 28 -> [0, 1, 1]."""
    sides = halvings(side)
    return [sides[i] - (2 * sides[i + 1] - 1) for i in (2, 1, 0)]


class ConvAutoencoder(nn.Module):
    """The exercise's convolutional autoencoder, for any latent size and image shape: its
    architecture unchanged, its weights He-initialised unless `init="pytorch"`.

    Encoder: three stride-2 3x3 convolutions (C->32->64->128; 28->14->7->4 at MNIST's
    size) and a linear map to the code. Decoder: the mirror image, its output paddings
    chosen so that the output has the input's shape, ending in a sigmoid so that outputs
    are pixel intensities in [0, 1]. At 1x28x28 it is the exercise's model exactly: the
    same layers, built (and so initialised) in the same order.
    """

    def __init__(self, latent_dim: int, shape: Shape = MNIST_SHAPE, init: str = "he") -> None:
        if init not in CONV_INITS:
            raise ValueError(f"init must be one of {CONV_INITS}, not {init!r}")
        check_shape(shape)
        super().__init__()
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        channels, height, width = shape
        inner = (128, halvings(height)[-1], halvings(width)[-1])
        pads = list(zip(output_paddings(height), output_paddings(width), strict=True))
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(math.prod(inner), latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, math.prod(inner)),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, inner),
            nn.ConvTranspose2d(128, 64, kernel_size=3, stride=2, padding=1, output_padding=pads[0]),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 32, kernel_size=3, stride=2, padding=1, output_padding=pads[1]),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(
                32, channels, kernel_size=3, stride=2, padding=1, output_padding=pads[2]
            ),
            nn.Sigmoid(),
        )
        if init == "he":
            he_init(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def he_init(model: nn.Module) -> None:
    """He et al. (2015) initialisation for ReLU networks: normal weights of variance
    2/fan_in on every convolution and linear layer, zero biases. With PyTorch's default
    initialisation most seeds at d=3 sit at the all-black output's loss for good; with
    this one none of the 40 measured (d, seed) pairs did."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)


class LinearAutoencoder(nn.Module):
    """Bias-free linear C*H*W -> d -> C*H*W: its optimum spans the top-d uncentered PCA
    subspace."""

    def __init__(self, latent_dim: int, shape: Shape = MNIST_SHAPE) -> None:
        super().__init__()
        self.latent_dim, self.shape = latent_dim, tuple(shape)
        self.encoder = nn.Linear(math.prod(shape), latent_dim, bias=False)
        self.decoder = nn.Linear(latent_dim, math.prod(shape), bias=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.reshape(x.shape[0], -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(z.shape[0], *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


_CLASSES = dict(zip(MODEL_KINDS, (ConvAutoencoder, LinearAutoencoder), strict=True))


def build_model(kind: str, latent_dim: int, shape: Shape = MNIST_SHAPE) -> nn.Module:
    """A fresh, randomly initialised model of the given kind ("conv" or "linear") for
    images of `shape` (C, H, W); ModelConfig's ConfigError for anything else."""
    config = ModelConfig(kind, latent_dim)
    return _CLASSES[config.kind](config.latent_dim, shape)


@dataclass(frozen=True)
class ParamCounts:
    total: int
    encoder: int
    decoder: int


def count_params(model: nn.Module) -> ParamCounts:
    """Trainable parameters of the whole model and of its encoder and decoder."""

    def n(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    return ParamCounts(total=n(model), encoder=n(model.encoder), decoder=n(model.decoder))
