"""Hook implementations of foundry-plugin-flow: the ``flow`` architecture.

Only hooks, and no torch: the model is named as ``"module:function"`` and imported when a
model is first built.
"""

from __future__ import annotations

from foundry_plugin_flow.config import PRESETS, FlowConfig
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="flow",
            config_class=FlowConfig,
            family="flow",
            description="normalizing flows: RealNVP and Glow (multi-scale) for images, MAF and NSF (zuko) for vectors",
            presets=PRESETS,
            capabilities=Capabilities(
                modality="image",
                modalities=("image", "vector"),
                sampling=True,
                likelihood="exact",
                latent=True,
            ),
        )
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("flow", "foundry_plugin_flow.model:build")]
