"""The ``encoder`` and ``decoder`` config blocks that generative architectures share.

No torch here: a plugin's config classes nest these blocks and its ``plugin.py`` imports them.

Shapes are ``[C, H, W]`` for images and ``[D]`` for vectors. ``kind`` chooses the network:
``mlp`` (flatten, then ``hidden_dims`` fully connected layers) or ``conv`` (one stride-2
convolution per entry of ``hidden_dims``); null means conv for images and mlp for vectors.

How a conv decoder reaches its output size (the rule :meth:`DecoderConfig.validate` checks):
with ``n = len(hidden_dims)`` upsampling stages, the latent is projected to a start grid of
``ceil(H / 2**n) x ceil(W / 2**n)``, each stage exactly doubles it, and the result is cropped
(top-left kept) to ``H x W``. Every size is reachable that way, except one too small for the
stages: when ``2**n > H`` (or ``> W``) even a 1x1 start doubles past the image, so the last
stage would only make pixels that are cropped away. 8x8 allows at most 3 stages, 28x28 and
32x32 at most 4 and 5.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.fields import option, positive

Activation = Literal["relu", "leaky_relu", "gelu", "silu", "tanh", "elu"]
NetworkKind = Literal["mlp", "conv"]
Normalization = Literal["none", "batch", "layer", "group"]
OutputActivation = Literal["none", "tanh", "sigmoid"]


def network_kind(kind: str | None, shape: tuple[int, ...]) -> str:
    """The network ``kind`` resolves to for examples of ``shape``: null is conv for images, mlp for vectors."""
    if kind is not None:
        return kind
    return "conv" if len(shape) == 3 else "mlp"


def upsampling_start(size: int, stages: int) -> int:
    """The start size a conv decoder projects to so that ``stages`` doublings reach at least ``size``."""
    return math.ceil(size / 2**stages)


def _shape_problems(key: str, shape: tuple[int, ...], kind: str | None) -> Iterator[tuple[str, str]]:
    if len(shape) not in (1, 3):
        yield key, f"must be [C, H, W] (images) or [D] (vectors), got {list(shape)}"
    elif any(size < 1 for size in shape):
        yield key, f"sizes must be >= 1, got {list(shape)}"
    elif kind == "conv" and len(shape) != 3:
        yield "kind", f"a conv network needs an image shape [C, H, W], and {key} is {list(shape)}; use kind: mlp"


@attrs.frozen
class EncoderConfig:
    """An encoder: examples of ``input_shape`` -> a feature vector (its size is set by the model)."""

    input_shape: tuple[int, ...] = option((1, 8, 8), doc="one example's shape: [C, H, W] for images, [D] for vectors")
    latent_dim: int = option(16, doc="size of the latent code", validator=positive)
    hidden_dims: tuple[int, ...] = option(
        (32, 64), doc="widths in data-flow order: channels of each stride-2 convolution (conv), or layer sizes (mlp)"
    )
    activation: Activation = option("relu", doc="activation between layers")
    kind: Optional[NetworkKind] = option(None, doc="mlp or conv; null: conv for images, mlp for vectors")
    normalization: Normalization = option("none", doc="after each hidden layer: none, batch, layer or group")
    spectral_norm: bool = option(False, doc="spectral normalization of every linear and convolution weight")
    name: Optional[str] = option(None, doc="a label for this block (accepted for configs that carry one)")

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from _shape_problems("input_shape", self.input_shape, self.kind)
        if any(width < 1 for width in self.hidden_dims):
            yield "hidden_dims", f"widths must be >= 1, got {list(self.hidden_dims)}"

    @property
    def resolved_kind(self) -> str:
        return network_kind(self.kind, self.input_shape)


@attrs.frozen
class DecoderConfig:
    """A decoder: a latent vector of ``latent_dim`` -> an example of ``output_shape``."""

    output_shape: tuple[int, ...] = option((1, 8, 8), doc="one example's shape: [C, H, W] for images, [D] for vectors")
    latent_dim: int = option(16, doc="size of the latent code it decodes", validator=positive)
    hidden_dims: tuple[int, ...] = option(
        (64, 32), doc="widths in data-flow order: channels of each stride-2 upsampling (conv), or layer sizes (mlp)"
    )
    activation: Activation = option("relu", doc="activation between layers")
    kind: Optional[NetworkKind] = option(None, doc="mlp or conv; null: conv for images, mlp for vectors")
    normalization: Normalization = option("none", doc="after each hidden layer: none, batch, layer or group")
    spectral_norm: bool = option(False, doc="spectral normalization of every linear and convolution weight")
    output_activation: OutputActivation = option("none", doc="applied to the output: none, tanh (data in [-1, 1]) or sigmoid")
    name: Optional[str] = option(None, doc="a label for this block (accepted for configs that carry one)")

    def validate(self) -> Iterator[tuple[str, str]]:
        shape_problems = list(_shape_problems("output_shape", self.output_shape, self.kind))
        yield from shape_problems
        if any(width < 1 for width in self.hidden_dims):
            yield "hidden_dims", f"widths must be >= 1, got {list(self.hidden_dims)}"
        elif not shape_problems and self.resolved_kind == "conv":
            problem = self.reach_problem()
            if problem:
                yield "hidden_dims", problem

    @property
    def resolved_kind(self) -> str:
        return network_kind(self.kind, self.output_shape)

    def reach_problem(self) -> str | None:
        """Why a conv decoder's upsampling stages cannot make ``output_shape`` (None when they can)."""
        stages = len(self.hidden_dims)
        height, width = self.output_shape[1:]
        if 2**stages <= min(height, width):
            return None
        most = int(math.log2(min(height, width)))
        return (
            f"a conv decoder with {stages} stride-2 upsampling stages (one per hidden_dims entry) makes at least "
            f"{2**stages}x{2**stages} from a 1x1 start, larger than the {height}x{width} output_shape; "
            f"use at most {most} hidden_dims"
        )
