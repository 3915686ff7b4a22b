"""Hook implementations of foundry-plugin-performer: the ``performer`` architecture."""

from __future__ import annotations

from foundry_plugin_performer.config import PRESETS, PerformerConfig
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="performer",
            config_class=PerformerConfig,
            family="transformer",
            description="Performer (FAVOR+ linear attention): encoder (masked LM), decoder (causal LM with "
            "constant-time generation) or encoder-decoder, in the model factory guide's config shape",
            presets=PRESETS,
            capabilities=Capabilities(objectives=("causal_lm", "masked_lm"), supports_generation=True),
        )
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("performer", "foundry_plugin_performer.model:build")]
