"""The config class and presets of the ``gaussian_mixture`` architecture.

No torch here: this module is imported by ``foundry list`` through the plugin's hooks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.plugin import Presets, option, positive

# The rank of one example of each modality: (D,) vectors, (C, H, W) images.
RANK_OF_MODALITY = {"vector": 1, "image": 3}


@attrs.frozen
class GaussianMixtureConfig:
    """A mixture of diagonal Gaussians over flattened examples, one mixture per class when conditional."""

    modality: Optional[Literal["vector", "image"]] = option(
        None, doc="the data modeled: vector or image; null: the data section's (vector without one)"
    )
    data_shape: tuple[int, ...] = option(
        (2,), doc="one example's shape: [D] for vectors, [channels, height, width] for images"
    )
    num_components: int = option(8, doc="Gaussians in the mixture (per class when conditional)", validator=positive)
    num_classes: Optional[int] = option(
        None, doc="classes to condition on (class_labels 0..num_classes-1); null: unconditional", validator=positive
    )
    min_scale: float = option(
        1e-3, doc="smallest standard deviation, so constant pixels cannot drive the likelihood to infinity",
        validator=positive,
    )

    def validate(self) -> Iterator[tuple[str, str]]:
        if any(size < 1 for size in self.data_shape):
            yield "data_shape", f"sizes must be >= 1, got {list(self.data_shape)}"
        elif self.shape_problem() is not None:
            yield "data_shape", f"must be {self.shape_problem()}"

    def shape_problem(self) -> str | None:
        """Why ``data_shape`` cannot hold examples of ``modality`` (None when it can)."""
        ranks = {self.modality: RANK_OF_MODALITY[self.modality]} if self.modality else RANK_OF_MODALITY
        if len(self.data_shape) in ranks.values():
            return None
        expected = {"vector": "[D]", "image": "[channels, height, width]"}
        return f"{' or '.join(f'{expected[m]} ({m}s)' for m in ranks)}, not {list(self.data_shape)}"

    @property
    def dimension(self) -> int:
        return math.prod(self.data_shape)


PRESETS = Presets()


@PRESETS.register("tiny")
def tiny() -> GaussianMixtureConfig:
    return GaussianMixtureConfig(num_components=4)


@PRESETS.register("small")
def small() -> GaussianMixtureConfig:
    return attrs.evolve(tiny(), num_components=16)


@PRESETS.register("base")
def base() -> GaussianMixtureConfig:
    return attrs.evolve(tiny(), num_components=64)
