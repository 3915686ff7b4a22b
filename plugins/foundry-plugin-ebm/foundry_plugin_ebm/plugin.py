"""Hook implementations of foundry-plugin-ebm: the ``ebm`` and ``deep_ebm`` architectures.

Only hooks, and no torch: the models are named as ``"module:function"`` and imported when a
model is first built.
"""

from __future__ import annotations

from foundry_plugin_ebm.config import DEEP_EBM_PRESETS, EBM_PRESETS, DeepEBMConfig, EBMConfig
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl

# What both architectures can do: sample by SGLD, and give the energy and its gradient, of points or images.
CAPABILITIES = Capabilities(modality="vector", modalities=("vector", "image"), sampling=True, energy=True, score=True)


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="ebm",
            config_class=EBMConfig,
            family="energy",
            description="energy-based model (MLP or conv energy) trained contrastively on SGLD negatives from a replay buffer",
            presets=EBM_PRESETS,
            capabilities=CAPABILITIES,
        ),
        ArchitectureSchema(
            name="deep_ebm",
            config_class=DeepEBMConfig,
            family="energy",
            description="IGEBM-style energy-based model: a residual, spectrally normalized energy network, SGLD from a replay buffer",
            presets=DEEP_EBM_PRESETS,
            capabilities=CAPABILITIES,
        ),
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [
        ModelBuilder("ebm", "foundry_plugin_ebm.model:build"),
        ModelBuilder("deep_ebm", "foundry_plugin_ebm.model:build"),
    ]
