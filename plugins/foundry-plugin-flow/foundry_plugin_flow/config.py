"""The config class and presets of the ``flow`` architecture.

No torch here: this module is imported by ``foundry list`` through the plugin's hooks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.plugin import Presets, in_range, option, positive

IMAGE_FLOWS = ("realnvp", "glow")
VECTOR_FLOWS = ("maf", "nsf")
# The shape one example has when data_shape is null.
DEFAULT_SHAPES = {"image": (1, 8, 8), "vector": (2,)}


@attrs.frozen
class FlowConfig:
    """A normalizing flow: multi-scale RealNVP or Glow for images, MAF or NSF (zuko) for vectors."""

    modality: Optional[Literal["image", "vector"]] = option(
        None, doc="the data modeled: image (realnvp, glow) or vector (maf, nsf); null: the data section's"
    )
    flow_type: Literal["realnvp", "glow", "maf", "nsf"] = option(
        "realnvp",
        doc="realnvp: affine couplings (+ actnorm); glow: actnorm, invertible 1x1 convolution, affine coupling "
        "(images, multi-scale); maf: masked affine autoregressive; nsf: neural spline flow (vectors, zuko)",
    )
    data_shape: Optional[tuple[int, ...]] = option(
        None, doc="one example's shape: [channels, height, width] for images, [D] for vectors; "
        "null: [1, 8, 8] for image flows, [2] for vector flows",
    )
    num_scales: int = option(
        2, doc="images: levels of the multi-scale architecture; each squeezes height and width by 2, and all "
        "but the last factor half of the channels out", validator=positive,
    )
    steps_per_scale: int = option(
        4, doc="images: flow steps per scale; vectors: autoregressive transforms", validator=positive,
    )
    hidden_channels: int = option(
        64, doc="width of each coupling network (images: convolution channels; vectors: hidden features)",
        validator=positive,
    )
    hidden_layers: int = option(
        2, doc="hidden layers of each coupling network (images: a 3x3 convolution, hidden_layers - 1 1x1 ones, "
        "then the output 3x3 one; vectors: MLP hidden layers)", validator=positive,
    )
    mask: Literal["checkerboard", "channel", "alternate"] = option(
        "alternate",
        doc="images: coupling masks; checkerboard (spatial), channel (halves of the channels), or alternate "
        "(the first half of each scale's steps checkerboard, the rest channel, as RealNVP)",
    )
    actnorm: bool = option(True, doc="images: an activation normalisation (data-initialised) before each coupling")
    lu_decomposed: bool = option(
        True, doc="glow: parametrise each invertible 1x1 convolution as P L U (log-determinant in O(C))",
    )
    dequantization: Optional[Literal["uniform", "variational", "none"]] = option(
        None,
        doc="images: how discrete pixels become continuous; uniform noise over each pixel's bin, a learned "
        "(variational) noise distribution, or none (continuous images); null: uniform for images, none for vectors",
    )
    levels: int = option(
        256, doc="images: pixel values in the data (17 for digits, 256 for 8-bit images); sets the bin width "
        "of the dequantisation and the grid samples are rounded to", validator=in_range(2, 2**16),
    )
    logit_alpha: float = option(
        0.05, doc="images: x in (0, 1) enters the flow as logit(alpha + (1 - 2 alpha) x), keeping it finite",
        validator=in_range(1e-6, 0.49),
    )
    bins: int = option(8, doc="nsf: spline bins per transform", validator=positive)
    eval_noise_samples: int = option(
        4, doc="images with dequantisation: noise draws per example in log_prob (an importance-weighted bound)",
        validator=positive,
    )
    temperature: float = option(
        1.0, doc="standard deviation of the base Gaussian when sampling (below 1: fewer, cleaner modes)",
        validator=in_range(1e-3, 10.0),
    )

    def validate(self) -> Iterator[tuple[str, str]]:
        kind = "image" if self.flow_type in IMAGE_FLOWS else "vector"
        if self.modality is not None and self.modality != kind:
            flows = IMAGE_FLOWS if self.modality == "image" else VECTOR_FLOWS
            yield "flow_type", f"{self.flow_type} models {kind}s, and the model is for {self.modality} data; use {' or '.join(flows)}"
            return
        shape = self.shape
        if any(size < 1 for size in shape):
            yield "data_shape", f"sizes must be >= 1, got {list(shape)}"
            return
        if kind == "vector":
            if len(shape) != 1:
                yield "data_shape", f"{self.flow_type} models vectors: must be [D], not {list(shape)}"
            if self.dequantization not in (None, "none"):
                yield "dequantization", (
                    f"vectors are continuous and {self.flow_type} takes them as they are; dequantization must be none, "
                    f"not {self.dequantization}"
                )
            return
        if len(shape) != 3:
            yield "data_shape", f"{self.flow_type} models images: must be [channels, height, width], not {list(shape)}"
            return
        _, height, width = shape
        factor = 2**self.num_scales
        if height % factor or width % factor:
            yield "data_shape", (
                f"{height}x{width} images cannot be squeezed {self.num_scales} times (num_scales): height and width "
                f"must be divisible by 2**{self.num_scales} = {factor}; pad or crop the images, or lower num_scales"
            )
            return
        last = (height // factor) * (width // factor)
        if self.mask in ("checkerboard", "alternate") and last < 2:
            yield "mask", (
                f"mask {self.mask} uses checkerboard couplings, and at scale {self.num_scales} the {height // factor}x"
                f"{width // factor} map has one pixel: the mask would leave no pixel to transform; use mask: channel "
                "or fewer num_scales"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """``data_shape``, or the default shape of the flow type's modality."""
        if self.data_shape is not None:
            return tuple(self.data_shape)
        return DEFAULT_SHAPES["image" if self.flow_type in IMAGE_FLOWS else "vector"]

    @property
    def dequantizer(self) -> str:
        """``dequantization``, or the flow type's default (uniform for images, none for vectors)."""
        if self.dequantization is not None:
            return self.dequantization
        return "uniform" if self.flow_type in IMAGE_FLOWS else "none"

    @property
    def dimension(self) -> int:
        return math.prod(self.shape)


PRESETS = Presets()


@PRESETS.register("tiny")
def tiny() -> FlowConfig:
    return FlowConfig(flow_type="realnvp", num_scales=1, steps_per_scale=2, hidden_channels=16, hidden_layers=1)


@PRESETS.register("small")
def small() -> FlowConfig:
    return attrs.evolve(tiny(), num_scales=2, steps_per_scale=4, hidden_channels=64, hidden_layers=2)


@PRESETS.register("base")
def base() -> FlowConfig:
    return attrs.evolve(tiny(), num_scales=2, steps_per_scale=8, hidden_channels=128, hidden_layers=2)


# The other flow types at the tiny size (the conformance kit runs each).
@PRESETS.register("tiny_glow")
def tiny_glow() -> FlowConfig:
    return attrs.evolve(tiny(), flow_type="glow", mask="channel", dequantization="variational")


@PRESETS.register("tiny_maf")
def tiny_maf() -> FlowConfig:
    return attrs.evolve(tiny(), flow_type="maf", modality="vector")


@PRESETS.register("tiny_nsf")
def tiny_nsf() -> FlowConfig:
    return attrs.evolve(tiny(), flow_type="nsf", modality="vector", bins=4)
