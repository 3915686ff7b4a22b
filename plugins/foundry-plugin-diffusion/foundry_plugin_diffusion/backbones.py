"""Denoising networks: ``network(x, t, class_labels) -> a tensor shaped like x``.

``t`` is one timestep per example (an integer step, or a float noise level mapped onto the
same range by score models); ``class_labels`` is ``None`` or one class per example, where the
extra last class means "no class" (classifier-free guidance).
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from foundry_plugin_diffusion.config import BackboneConfig


class UNetBackbone(nn.Module):
    """diffusers' UNet2DModel, as it is: ``foundry export --to diffusers`` saves ``self.unet``."""

    def __init__(self, config: BackboneConfig, input_shape: tuple[int, ...], num_class_embeds: int | None):
        super().__init__()
        channels, height, _ = input_shape
        levels = len(config.channel_mults)
        down = ["DownBlock2D"] * levels
        up = ["UpBlock2D"] * levels
        if config.attention:  # at the lowest resolution only, where attention is cheap
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.unet = UNet2DModel(
            sample_size=height,
            in_channels=channels,
            out_channels=channels,
            layers_per_block=config.layers_per_block,
            block_out_channels=tuple(config.base_channels * m for m in config.channel_mults),
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=config.norm_groups,
            add_attention=config.attention,
            num_class_embeds=num_class_embeds,
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, class_labels=class_labels, return_dict=False)[0]


class MLPBackbone(nn.Module):
    """A residual MLP over flattened examples, told the timestep (and class) by a sinusoidal embedding."""

    def __init__(self, config: BackboneConfig, input_shape: tuple[int, ...], num_class_embeds: int | None):
        super().__init__()
        hidden, dimension = config.hidden_dim, math.prod(input_shape)
        self.hidden_dim = hidden
        self.time_embedding = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_embedding = nn.Embedding(num_class_embeds, hidden) if num_class_embeds else None
        self.input = nn.Linear(dimension, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(config.num_layers))
        self.output = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dimension))

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        condition = self.time_embedding(get_timestep_embedding(t, self.hidden_dim, flip_sin_to_cos=True,
                                                               downscale_freq_shift=0).to(x.dtype))
        if self.class_embedding is not None and class_labels is not None:
            condition = condition + self.class_embedding(class_labels)
        h = self.input(x.flatten(1))
        for block in self.blocks:
            h = block(h, condition)
        return self.output(h).reshape(x.shape)


class ResidualBlock(nn.Module):
    """h + W2 silu(W1 silu(norm(h)) + W_c condition)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.first = nn.Linear(hidden, hidden)
        self.condition = nn.Linear(hidden, hidden)
        self.second = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        inner = self.first(nn.functional.silu(self.norm(h))) + self.condition(condition)
        return h + self.second(nn.functional.silu(inner))


def build_backbone(
    config: BackboneConfig, kind: str, input_shape: tuple[int, ...], num_classes: int | None
) -> nn.Module:
    """The network of ``kind`` (unet or mlp); a conditional one embeds num_classes + 1 labels (the last: none)."""
    num_class_embeds = num_classes + 1 if num_classes else None
    backbone = UNetBackbone if kind == "unet" else MLPBackbone
    return backbone(config, input_shape, num_class_embeds)
