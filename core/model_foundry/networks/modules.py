"""Encoder and decoder modules built from :mod:`model_foundry.networks.config` blocks.

Read top to bottom: activations and normalization, the MLP, the conv encoder (stride-2
convolutions down to a small grid, then a linear layer), the conv decoder (a linear
projection to a small grid, stride-2 transposed convolutions that exactly double it, a
top-left crop to the output size, a 3x3 convolution to the output channels), and the two
builders that choose between them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model_foundry.errors import FoundryError
from model_foundry.networks.config import DecoderConfig, EncoderConfig, upsampling_start

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}
OUTPUT_ACTIVATIONS = {"none": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation(name: str) -> nn.Module:
    """A fresh activation module by its config name (relu, leaky_relu (slope 0.2), gelu, silu, tanh, elu)."""
    return ACTIVATIONS[name]()


def normalization(name: str, features: int, spatial: bool) -> nn.Module:
    """Normalization of ``features`` channels (``spatial``: of (N, C, H, W) maps, else of (N, C) vectors).

    ``layer`` on maps normalizes over C, H and W together (GroupNorm with one group);
    ``group`` uses gcd(features, 8) groups, so any channel count works.
    """
    if name == "none":
        return nn.Identity()
    if name == "batch":
        return nn.BatchNorm2d(features) if spatial else nn.BatchNorm1d(features)
    if name == "layer":
        return nn.GroupNorm(1, features) if spatial else nn.LayerNorm(features)
    return nn.GroupNorm(math.gcd(features, 8), features)


def _weighted(layer: nn.Module, spectral: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if spectral else layer


class MLP(nn.Sequential):
    """Linear layers through ``hidden_dims`` (each followed by normalization and activation), then a linear output."""

    def __init__(
        self, in_features: int, hidden_dims: tuple[int, ...], out_features: int, activation_name: str = "relu",
        normalization_name: str = "none", spectral_norm: bool = False,
    ):
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_dims:
            layers += [
                _weighted(nn.Linear(width, hidden), spectral_norm),
                normalization(normalization_name, hidden, spatial=False),
                activation(activation_name),
            ]
            width = hidden
        layers.append(_weighted(nn.Linear(width, out_features), spectral_norm))
        super().__init__(*layers)


class MLPEncoder(nn.Module):
    """Flattens each example and maps it to ``out_features`` through an :class:`MLP`."""

    def __init__(self, config: EncoderConfig, out_features: int):
        super().__init__()
        self.mlp = MLP(
            math.prod(config.input_shape), config.hidden_dims, out_features, config.activation, config.normalization,
            config.spectral_norm,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x.flatten(1))


class ConvEncoder(nn.Module):
    """Images (N, C, H, W) -> features (N, out_features).

    One 3x3 stride-2 convolution per ``hidden_dims`` entry (each halves H and W, rounding up),
    then a linear layer from the flattened grid.
    """

    def __init__(self, config: EncoderConfig, out_features: int):
        super().__init__()
        channels, height, width = config.input_shape
        layers: list[nn.Module] = []
        for hidden in config.hidden_dims:
            layers += [
                _weighted(nn.Conv2d(channels, hidden, 3, stride=2, padding=1), config.spectral_norm),
                normalization(config.normalization, hidden, spatial=True),
                activation(config.activation),
            ]
            channels, height, width = hidden, math.ceil(height / 2), math.ceil(width / 2)
        self.convolutions = nn.Sequential(*layers)
        self.output = _weighted(nn.Linear(channels * height * width, out_features), config.spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.convolutions(x).flatten(1))


class MLPDecoder(nn.Module):
    """Latents (N, latent_dim) -> examples (N, *output_shape) through an :class:`MLP`."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.output_shape = tuple(config.output_shape)
        self.mlp = MLP(
            config.latent_dim, config.hidden_dims, math.prod(self.output_shape), config.activation,
            config.normalization, config.spectral_norm,
        )
        self.output_activation = OUTPUT_ACTIVATIONS[config.output_activation]()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output_activation(self.mlp(z).view(z.size(0), *self.output_shape))


class ConvDecoder(nn.Module):
    """Latents (N, latent_dim) -> images (N, C, H, W).

    A linear projection to ``hidden_dims[0]`` channels on a ceil(H / 2**n) x ceil(W / 2**n)
    grid (n = len(hidden_dims)), n 4x4 stride-2 transposed convolutions that exactly double
    it (to the channels of each ``hidden_dims`` entry), a top-left crop to H x W, and a 3x3
    convolution to C channels.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        problem = config.reach_problem()
        if problem is not None:
            raise FoundryError(f"decoder.hidden_dims: {problem}")
        channels, self.height, self.width = config.output_shape
        stages = len(config.hidden_dims)
        start_channels = config.hidden_dims[0] if stages else channels
        self.start = (start_channels, upsampling_start(self.height, stages), upsampling_start(self.width, stages))
        self.project = _weighted(nn.Linear(config.latent_dim, math.prod(self.start)), config.spectral_norm)
        layers: list[nn.Module] = [activation(config.activation)] if stages else []
        width = start_channels
        for hidden in config.hidden_dims:
            layers += [
                _weighted(nn.ConvTranspose2d(width, hidden, 4, stride=2, padding=1), config.spectral_norm),
                normalization(config.normalization, hidden, spatial=True),
                activation(config.activation),
            ]
            width = hidden
        self.upsample = nn.Sequential(*layers)
        self.output = _weighted(nn.Conv2d(width, channels, 3, padding=1), config.spectral_norm)
        self.output_activation = OUTPUT_ACTIVATIONS[config.output_activation]()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = self.upsample(self.project(z).view(z.size(0), *self.start))
        cropped = grid[:, :, : self.height, : self.width]
        return self.output_activation(self.output(cropped))


def build_encoder(config: EncoderConfig, out_features: int) -> nn.Module:
    """The encoder ``config`` describes, mapping examples of ``config.input_shape`` to ``out_features`` numbers."""
    if config.resolved_kind == "conv":
        return ConvEncoder(config, out_features)
    return MLPEncoder(config, out_features)


def build_decoder(config: DecoderConfig) -> nn.Module:
    """The decoder ``config`` describes, mapping ``config.latent_dim`` numbers to examples of ``config.output_shape``."""
    if config.resolved_kind == "conv":
        return ConvDecoder(config)
    return MLPDecoder(config)
