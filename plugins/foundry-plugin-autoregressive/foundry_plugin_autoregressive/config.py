"""Config classes and presets of the autoregressive architectures: ``pixelcnn``, ``wavenet``, ``transformer``.

Every model here predicts each value of an example from the values before it, as a
categorical distribution over discrete levels: image intensities quantised uniformly on
[-1, 1] (``levels``: 17 for the digits, 256 for 8-bit images), audio samples quantised by
the mu-law (``mu_law_levels`` / ``levels``: 256 in WaveNet's paper). No torch here: this
module is imported by ``foundry list``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.plugin import Presets, option, positive, probability


def _at_least_two(_instance: object, _attribute: object, value: int) -> None:
    if value < 2:
        raise ValueError(f"must be >= 2 (a distribution over fewer than two levels has nothing to model), got {value!r}")


def _odd_at_least_three(_instance: object, _attribute: object, value: int) -> None:
    if value < 3 or value % 2 == 0:
        raise ValueError(f"must be odd and >= 3 (a centred kernel that reaches past the pixel), got {value!r}")


def _image_shape_problems(data_shape: tuple[int, ...]) -> Iterator[tuple[str, str]]:
    if len(data_shape) != 3:
        yield "data_shape", f"must be [channels, height, width], not {list(data_shape)}"
    elif any(size < 1 for size in data_shape):
        yield "data_shape", f"sizes must be >= 1, got {list(data_shape)}"


@attrs.frozen
class PixelCNNConfig:
    """PixelCNN over images: masked convolutions, or the gated two-stack variant without a blind spot."""

    data_shape: tuple[int, ...] = option((1, 8, 8), doc="one image's shape: [channels, height, width]")
    levels: int = option(
        256, doc="intensity levels of the data on [-1, 1] (17 for the digits, 256 for 8-bit images)",
        validator=_at_least_two,
    )
    gated: bool = option(
        True, doc="gated PixelCNN (vertical and horizontal stacks, no blind spot); false: the original "
        "masked convolutions with ReLU residual blocks, which have a blind spot",
    )
    hidden_channels: int = option(64, doc="channels of every hidden layer", validator=positive)
    num_layers: int = option(6, doc="masked layers after the first", validator=positive)
    kernel_size: int = option(3, doc="kernel size of the hidden layers (odd)", validator=_odd_at_least_three)
    first_kernel_size: int = option(5, doc="kernel size of the first layer, which sees no pixel itself (odd)",
                                    validator=_odd_at_least_three)
    head_channels: int = option(128, doc="channels of the 1x1 output head before the logits", validator=positive)
    num_classes: Optional[int] = option(
        None, doc="classes to condition on (class_labels 0..num_classes-1); null: unconditional", validator=positive
    )
    dropout: float = option(0.0, doc="dropout inside each residual block", validator=probability)

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from _image_shape_problems(self.data_shape)


@attrs.frozen
class WaveNetConfig:
    """WaveNet over mu-law audio: dilated causal convolutions with gated activations, residual and skip paths."""

    mu_law_levels: int = option(256, doc="quantisation levels of the mu-law (mu = levels - 1)", validator=_at_least_two)
    dilations: tuple[int, ...] = option(
        (1, 2, 4, 8, 16, 32, 64, 128), doc="dilation of each layer's causal convolution, in order"
    )
    kernel_size: int = option(2, doc="taps of each dilated causal convolution", validator=_at_least_two)
    residual_channels: int = option(32, doc="channels of the residual path", validator=positive)
    skip_channels: int = option(64, doc="channels of the skip path and output head", validator=positive)
    num_classes: Optional[int] = option(
        None, doc="classes to condition on globally (class_labels 0..num_classes-1); null: unconditional",
        validator=positive,
    )
    sample_length: int = option(4000, doc="samples per clip that sample() generates", validator=positive)

    def validate(self) -> Iterator[tuple[str, str]]:
        if not self.dilations:
            yield "dilations", "must name at least one layer's dilation, e.g. [1, 2, 4, 8]"
        elif any(dilation < 1 for dilation in self.dilations):
            yield "dilations", f"every dilation must be >= 1, got {list(self.dilations)}"

    @property
    def receptive_field(self) -> int:
        """How many past samples the prediction of one sample sees: ``(kernel_size - 1) * sum(dilations) + 1``."""
        return (self.kernel_size - 1) * sum(self.dilations) + 1


@attrs.frozen
class TransformerConfig:
    """A decoder-only Transformer over discretised pixels (2-D positions) or audio samples (1-D positions)."""

    modality: Optional[Literal["image", "audio"]] = option(
        None, doc="the data modeled: image or audio; null: the data section's (image without one)"
    )
    data_shape: tuple[int, ...] = option(
        (1, 8, 8), doc="one example's shape: [channels, height, width] for images, [length] for audio "
        "(the longest clip; shorter ones are scored too)",
    )
    levels: int = option(
        256, doc="quantisation levels: uniform on [-1, 1] for images (17 for the digits), mu-law for audio",
        validator=_at_least_two,
    )
    hidden_size: int = option(128, doc="width of the token embeddings and every block", validator=positive)
    num_layers: int = option(4, doc="Transformer blocks", validator=positive)
    num_heads: int = option(4, doc="attention heads (must divide hidden_size)", validator=positive)
    mlp_ratio: int = option(4, doc="hidden width of each block's MLP, in multiples of hidden_size", validator=positive)
    dropout: float = option(0.1, doc="dropout on attention weights and residual branches", validator=probability)
    num_classes: Optional[int] = option(
        None, doc="classes to condition on (the class embedding starts the sequence); null: unconditional",
        validator=positive,
    )

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.hidden_size % self.num_heads:
            yield "num_heads", f"must divide hidden_size ({self.hidden_size}), got {self.num_heads}"
        if self.modality == "audio" or (self.modality is None and len(self.data_shape) == 1):
            if len(self.data_shape) != 1 or self.data_shape[0] < 1:
                yield "data_shape", f"audio needs [length] with length >= 1, not {list(self.data_shape)}"
        else:
            yield from _image_shape_problems(self.data_shape)


PIXELCNN_PRESETS = Presets()
WAVENET_PRESETS = Presets()
TRANSFORMER_PRESETS = Presets()


@PIXELCNN_PRESETS.register("tiny")
def pixelcnn_tiny() -> PixelCNNConfig:
    return PixelCNNConfig(data_shape=(1, 6, 6), levels=5, hidden_channels=8, num_layers=2, head_channels=8)


@PIXELCNN_PRESETS.register("small")
def pixelcnn_small() -> PixelCNNConfig:
    return PixelCNNConfig(levels=17, hidden_channels=64, num_layers=6, head_channels=128)


@PIXELCNN_PRESETS.register("base")
def pixelcnn_base() -> PixelCNNConfig:
    return PixelCNNConfig(data_shape=(3, 32, 32), hidden_channels=128, num_layers=12, head_channels=256)


@WAVENET_PRESETS.register("tiny")
def wavenet_tiny() -> WaveNetConfig:
    return WaveNetConfig(mu_law_levels=16, dilations=(1, 2, 4), residual_channels=8, skip_channels=8, sample_length=64)


@WAVENET_PRESETS.register("small")
def wavenet_small() -> WaveNetConfig:
    return WaveNetConfig(dilations=(1, 2, 4, 8, 16, 32, 64, 128), residual_channels=32, skip_channels=64)


@WAVENET_PRESETS.register("base")
def wavenet_base() -> WaveNetConfig:
    # Three stacks of ten doublings, as in the WaveNet paper: a receptive field of 3070 samples.
    return WaveNetConfig(dilations=tuple(2**i for i in range(10)) * 3, residual_channels=64, skip_channels=256,
                         sample_length=16000)


@TRANSFORMER_PRESETS.register("tiny")
def transformer_tiny() -> TransformerConfig:
    return TransformerConfig(data_shape=(1, 4, 4), levels=5, hidden_size=16, num_layers=2, num_heads=2)


@TRANSFORMER_PRESETS.register("small")
def transformer_small() -> TransformerConfig:
    return TransformerConfig(levels=17, hidden_size=128, num_layers=4, num_heads=4)


@TRANSFORMER_PRESETS.register("base")
def transformer_base() -> TransformerConfig:
    return TransformerConfig(data_shape=(3, 32, 32), hidden_size=256, num_layers=8, num_heads=8)


@TRANSFORMER_PRESETS.register("tiny-audio")
def transformer_tiny_audio() -> TransformerConfig:
    return attrs.evolve(transformer_tiny(), modality="audio", data_shape=(32,), levels=16)
