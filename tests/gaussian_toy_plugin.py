"""A full-covariance Gaussian over images or vectors, registered directly by the tests of
extensions, the factory and metrics (no installation).

Its log-density, samples and input gradients have closed forms, which the tests compare with.
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from model_foundry.fields import option, positive
from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder

INPUT_KEYS = {"image": "pixel_values", "vector": "vectors"}


@attrs.frozen
class GaussianToyConfig:
    """One Gaussian over examples of ``shape``."""

    shape: list[int] = option(factory=lambda: [1, 2, 2], doc="shape of one example")
    modality: Optional[Literal["image", "vector"]] = option(None, doc="the data it models (default: image)")
    init_scale: float = option(1.0, doc="initial standard deviation", validator=positive)

    def validate(self):
        if any(size <= 0 for size in self.shape):
            yield "shape", f"sizes must be > 0, got {self.shape}"


def build(model_config):
    import math

    import torch
    from torch import nn

    from model_foundry.protocol import FoundryModel, ModelOutput

    class GaussianToy(FoundryModel):
        def __init__(self, config):
            super().__init__(config)
            self.input_key = INPUT_KEYS[config.modality or "image"]
            self.shape = tuple(config.shape) if config.modality != "vector" else (math.prod(config.shape),)
            dim = math.prod(config.shape)
            self.loc = nn.Parameter(torch.zeros(dim))
            self.scale_tril = nn.Parameter(torch.eye(dim) * config.init_scale)

        def distribution(self):
            return torch.distributions.MultivariateNormal(self.loc, scale_tril=torch.tril(self.scale_tril), validate_args=False)

        def log_prob(self, **batch):
            return self.distribution().log_prob(batch[self.input_key].flatten(1))

        def forward(self, **batch):
            return ModelOutput(loss=-self.log_prob(**batch).mean())

        def sample(self, num_samples, *, generator=None, conditions=None):
            noise = torch.randn(num_samples, self.loc.numel(), generator=generator, device=self.loc.device)
            flat = self.loc + noise @ torch.tril(self.scale_tril).T
            return flat.view(num_samples, *self.shape)

    return GaussianToy(model_config)


class GaussianToyPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        return [
            ArchitectureSchema(
                "gaussian_toy", GaussianToyConfig, family="test", description="one full-covariance Gaussian",
                presets={"tiny": lambda: GaussianToyConfig(shape=[1, 2, 2])},
                capabilities=Capabilities(modality="image", modalities=("image", "vector"), sampling=True,
                                          likelihood="exact"),
            ),
        ]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("gaussian_toy", build)]


PLUGIN = GaussianToyPlugin()
