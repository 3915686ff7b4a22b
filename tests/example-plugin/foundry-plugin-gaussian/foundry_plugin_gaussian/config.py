"""The config class and presets of the ``gaussian_mixture`` architecture.

No torch here: this module is imported by ``foundry list`` through the plugin's hooks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Optional

import attrs

from model_foundry.schema import option, positive

# The modality a model of each data rank reads and samples: (D,) vectors, (C, H, W) images.
MODALITY_OF_RANK = {1: "vector", 3: "image"}


@attrs.frozen
class GaussianMixtureConfig:
    """A mixture of diagonal Gaussians over flattened examples, one mixture per class when conditional."""

    num_components: int = option(8, doc="Gaussians in the mixture (per class when conditional)", validator=positive)
    data_shape: tuple[int, ...] = option(
        (2,), doc="one example's shape: [D] for vectors, [channels, height, width] for images"
    )
    num_classes: Optional[int] = option(
        None, doc="classes to condition on (class_labels 0..num_classes-1); null: unconditional", validator=positive
    )
    min_scale: float = option(
        1e-3, doc="smallest standard deviation, so constant pixels cannot drive the likelihood to infinity",
        validator=positive,
    )

    def validate(self) -> Iterator[tuple[str, str]]:
        if len(self.data_shape) not in MODALITY_OF_RANK:
            yield "data_shape", f"must be [D] (vectors) or [channels, height, width] (images), got {list(self.data_shape)}"
        elif any(size < 1 for size in self.data_shape):
            yield "data_shape", f"sizes must be >= 1, got {list(self.data_shape)}"

    @property
    def modality(self) -> str:
        return MODALITY_OF_RANK[len(self.data_shape)]

    @property
    def dimension(self) -> int:
        return math.prod(self.data_shape)


PRESETS = {
    "tiny": {"num_components": 4, "data_shape": [2]},
    "small": {"num_components": 16, "data_shape": [2]},
    "base": {"num_components": 64, "data_shape": [2]},
}
