"""Hook implementations of foundry-plugin-gaussian: the ``gaussian_mixture`` architecture.

Only hooks, and no torch: the model is named as ``"module:function"`` and imported when a
model is first built.
"""

from __future__ import annotations

from foundry_plugin_gaussian.config import PRESETS, GaussianMixtureConfig
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="gaussian_mixture",
            config_class=GaussianMixtureConfig,
            family="mixture",
            description="mixture of diagonal Gaussians trained by maximum likelihood (vectors, flattened images)",
            presets=PRESETS,
            capabilities=Capabilities(
                modality="vector",
                modalities=("vector", "image"),
                sampling=True,
                likelihood="exact",
                conditional=True,
            ),
        )
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("gaussian_mixture", "foundry_plugin_gaussian.model:build")]
