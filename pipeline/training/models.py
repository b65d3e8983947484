"""The exercise's autoencoders as plain ``nn.Module``s with ``encode``/``decode``/``forward``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import MODEL_KINDS, PIXELS, ModelConfig

IMAGE_SHAPE = (1, 28, 28)


CONV_INITS = ("he", "pytorch")
"""How ConvAutoencoder's weights start: "he" (the default; He et al. 2015, for ReLU
networks) or "pytorch" (each layer's own default, as in the exercise).
docs/training-health.md measures both."""


class ConvAutoencoder(nn.Module):
    """The exercise's convolutional autoencoder, for any latent size: its architecture
    unchanged, its weights He-initialised unless `init="pytorch"`.

    Encoder: three stride-2 3x3 convolutions (1->32->64->128, 28->14->7->4) and a
    linear map to the code. Decoder: the mirror image, ending in a sigmoid so that
    outputs are pixel intensities in [0, 1].
    """

    def __init__(self, latent_dim: int, input_channels: int = 1, init: str = "he") -> None:
        if init not in CONV_INITS:
            raise ValueError(f"init must be one of {CONV_INITS}, not {init!r}")
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(input_channels, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 128 * 4 * 4),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, kernel_size=3, stride=2, padding=1, output_padding=0),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(64, 32, kernel_size=3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(
                32, input_channels, kernel_size=3, stride=2, padding=1, output_padding=1
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
    """Bias-free linear 784 -> d -> 784: its optimum spans the top-d uncentered PCA subspace."""

    def __init__(self, latent_dim: int, input_dim: int = PIXELS) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Linear(input_dim, latent_dim, bias=False)
        self.decoder = nn.Linear(latent_dim, input_dim, bias=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.reshape(x.shape[0], -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(z.shape[0], *IMAGE_SHAPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


_CLASSES = dict(zip(MODEL_KINDS, (ConvAutoencoder, LinearAutoencoder), strict=True))


def build_model(kind: str, latent_dim: int) -> nn.Module:
    """A fresh, randomly initialised model of the given kind ("conv" or "linear");
    ModelConfig's ConfigError for anything else."""
    config = ModelConfig(kind, latent_dim)
    return _CLASSES[config.kind](config.latent_dim)


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
