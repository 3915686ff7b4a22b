"""Hook implementations of foundry-plugin-hybrid (no torch: model code is named, not imported)."""

from __future__ import annotations

from foundry_plugin_hybrid.config import PRESETS, HybridConfig
from model_foundry.plugin import ArchitectureSchema, Capabilities, CollatorSpec, ModelBuilder, hookimpl


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="hybrid",
            config_class=HybridConfig,
            family="transformer",
            description="GPT/BERT hybrid: shared embeddings, bidirectional MLM encoder and causal LM decoder",
            presets=PRESETS,
            capabilities=Capabilities(objectives=("hybrid", "causal_lm", "masked_lm"), supports_generation=True),
        )
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("hybrid", "foundry_plugin_hybrid.model:build")]


@hookimpl
def foundry_collators() -> list[CollatorSpec]:
    return [
        CollatorSpec(
            "hybrid",
            "foundry_plugin_hybrid.collator:HybridCollator",
            "causal inputs/labels plus BERT-masked mlm_input_ids/mlm_labels from the same examples",
        )
    ]
