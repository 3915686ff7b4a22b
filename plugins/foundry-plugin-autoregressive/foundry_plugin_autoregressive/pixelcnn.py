"""PixelCNN: the ``pixelcnn`` architecture.

Pixels are predicted in raster order (row by row, left to right); the channels of one pixel
are predicted independently of each other given every pixel before it, so

    log P(image) = sum_{i,j} sum_c log P(x_{c,i,j} | x_{:, <(i,j)})

with a categorical over ``levels`` intensities per value (``discrete.py`` turns it into a
density). Two networks compute the logits of every pixel at once, so that training and
``log_prob`` take one pass:

- **gated** (default, van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
  Decoders"): a *vertical stack* whose output at row i sees only rows above i, and a
  *horizontal stack* that sees the pixels left of (i, j) in row i plus the vertical stack at
  (i, j). Both use ``tanh(a) * sigmoid(b)`` gates. Causality comes from shifting the input
  (down by a row for the vertical stack, right by a column for the horizontal one) and from
  convolutions padded to look only up or left; the receptive field is every earlier pixel
  within reach, with no blind spot.
- **masked** (``gated: false``, van den Oord et al. 2016, "Pixel Recurrent Neural Networks"):
  a k x k convolution with mask A (no centre), then residual blocks around a mask-B
  convolution. Stacked masked kernels never reach the pixels up and to the right of a
  growing wedge: the blind spot the gated variant removes.

A conditional model (``num_classes``) adds a learned per-class bias to every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_autoregressive.discrete import (
    UniformLevels,
    check_classes,
    check_shape,
    draw,
    in_eval_mode,
    log_density,
    log_pmf,
    sampling_classes,
)
from model_foundry.plugin import FoundryModel, ModelConfig, ModelOutput


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Row i receives row i - 1 (zeros in row 0)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Column j receives column j - 1 (zeros in column 0)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def gate(x: torch.Tensor) -> torch.Tensor:
    content, gate_logits = x.chunk(2, dim=1)
    return torch.tanh(content) * torch.sigmoid(gate_logits)


class VerticalConv(nn.Conv2d):
    """At (i, j): rows i - k//2 .. i, columns j - k//2 .. j + k//2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, (kernel_size // 2 + 1, kernel_size))
        self.reach = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.reach, self.reach, self.reach, 0)))


class HorizontalConv(nn.Conv2d):
    """At (i, j): row i, columns j - k//2 .. j."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, (1, kernel_size // 2 + 1))
        self.reach = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.reach, 0, 0, 0)))


class GatedLayer(nn.Module):
    """One layer of both stacks. The first sees the image shifted, so no pixel sees itself."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool, dropout: float,
                 num_classes: int | None):
        super().__init__()
        self.first = first
        self.vertical = VerticalConv(in_channels, 2 * channels, kernel_size)
        self.horizontal = HorizontalConv(in_channels, 2 * channels, kernel_size)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.class_bias = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.vertical(down_shift(v) if self.first else v)
        h_pre = self.horizontal(right_shift(h) if self.first else h) + self.vertical_to_horizontal(v_pre)
        if self.class_bias is not None and classes is not None:
            v_bias, h_bias = self.class_bias(classes)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + v_bias, h_pre + h_bias
        h_new = self.horizontal_out(self.dropout(gate(h_pre)))
        return gate(v_pre), h_new if self.first else h + h_new


class GatedStacks(nn.Module):
    def __init__(self, in_channels: int, params):
        super().__init__()
        channels = params.hidden_channels
        self.layers = nn.ModuleList(
            [GatedLayer(in_channels, channels, params.first_kernel_size, True, params.dropout, params.num_classes)]
            + [GatedLayer(channels, channels, params.kernel_size, False, params.dropout, params.num_classes)
               for _ in range(params.num_layers)]
        )

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, classes)
        return h


class MaskedConv2d(nn.Conv2d):
    """A k x k convolution that sees the rows above and the pixels left in its row; mask B also the centre."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, include_centre: bool):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = torch.zeros(kernel_size, kernel_size)
        centre = kernel_size // 2
        mask[:centre, :] = 1
        mask[centre, : centre + int(include_centre)] = 1
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class MaskedResidualBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dropout: float, num_classes: int | None):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 2 or 1, 1)
        self.masked = MaskedConv2d(channels // 2 or 1, channels // 2 or 1, kernel_size, include_centre=True)
        self.expand = nn.Conv2d(channels // 2 or 1, channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.class_bias = nn.Embedding(num_classes, channels // 2 or 1) if num_classes else None

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        y = self.masked(F.relu(self.reduce(F.relu(x))))
        if self.class_bias is not None and classes is not None:
            y = y + self.class_bias(classes)[:, :, None, None]
        return x + self.expand(self.dropout(F.relu(y)))


class MaskedStack(nn.Module):
    def __init__(self, in_channels: int, params):
        super().__init__()
        channels = params.hidden_channels
        self.first = MaskedConv2d(in_channels, channels, params.first_kernel_size, include_centre=False)
        self.class_bias = nn.Embedding(params.num_classes, channels) if params.num_classes else None
        self.blocks = nn.ModuleList(
            MaskedResidualBlock(channels, params.kernel_size, params.dropout, params.num_classes)
            for _ in range(params.num_layers)
        )

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        h = self.first(x)
        if self.class_bias is not None and classes is not None:
            h = h + self.class_bias(classes)[:, :, None, None]
        for block in self.blocks:
            h = block(h, classes)
        return h


class PixelCNN(FoundryModel):
    """The model of the ``pixelcnn`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.data_shape = tuple(params.data_shape)
        self.num_classes = params.num_classes
        self.levels = UniformLevels(params.levels)
        channels = self.data_shape[0]
        self.stack = (GatedStacks if params.gated else MaskedStack)(channels, params)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(params.hidden_channels, params.head_channels, 1),
            nn.ReLU(), nn.Conv2d(params.head_channels, channels * params.levels, 1),
        )

    def logits(self, codes: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, H, W, levels): the distribution of every value given the pixels before it."""
        hidden = self.stack(self.levels.values(codes).to(self.head[-1].weight.dtype), classes)
        n, c, height, width = codes.shape
        return self.head(hidden).view(n, c, self.levels.levels, height, width).permute(0, 1, 3, 4, 2)

    def forward(self, pixel_values: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> ModelOutput:
        """The negative mean log-likelihood, in nats per image."""
        return ModelOutput(loss=-self.log_prob(pixel_values=pixel_values, class_labels=class_labels).mean())

    def log_pmf(self, pixel_values: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log P(codes)`` of each image's quantised intensities (N,), in nats."""
        x = check_shape(self, pixel_values, "pixel_values", self.data_shape, "data_shape")
        codes = self.levels.codes(x)
        classes = check_classes(self, class_labels, x.shape[0], from_data=True)
        return log_pmf(self.logits(codes, classes), codes)

    def log_prob(self, pixel_values: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log-density of each image (N,), in nats (see ``discrete.py`` for the convention)."""
        codes = self.levels.codes(check_shape(self, pixel_values, "pixel_values", self.data_shape, "data_shape"))
        return log_density(self.log_pmf(pixel_values, class_labels), codes, self.levels)

    @torch.no_grad()
    @in_eval_mode
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               conditions: torch.Tensor | None = None) -> torch.Tensor:
        """``num_samples`` images (N, C, H, W) in [-1, 1], pixel by pixel in raster order; one
        network pass per pixel. Conditional models draw class ``conditions[i]`` for image i
        (uniformly drawn classes without conditions)."""
        device = next(self.parameters()).device
        classes = sampling_classes(self, conditions, num_samples, generator, device)
        channels, height, width = self.data_shape
        codes = torch.zeros(num_samples, *self.data_shape, dtype=torch.long, device=device)
        for i in range(height):
            for j in range(width):
                logits = self.logits(codes, classes)[:, :, i, j]
                for c in range(channels):
                    codes[:, c, i, j] = draw(logits[:, c], generator)
        return self.levels.values(codes)


def build(config: ModelConfig) -> PixelCNN:
    return PixelCNN(config)
