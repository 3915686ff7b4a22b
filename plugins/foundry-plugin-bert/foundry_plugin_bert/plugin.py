"""Hook implementations of the BERT plugin: what it contributes, named lazily (no torch import)."""

from __future__ import annotations

from foundry_plugin_bert.config import PRESETS, BertConfig
from model_foundry.plugin import ArchitectureSchema, Capabilities, CheckpointConverter, Exporter, ModelBuilder, hookimpl


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="bert",
            config_class=BertConfig,
            family="transformer-encoder",
            description="BERT masked language model (transformers' BertForMaskedLM)",
            presets=PRESETS,
            capabilities=Capabilities(objectives=("masked_lm",), supports_generation=False),
        )
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("bert", "foundry_plugin_bert.model:build")]


@hookimpl
def foundry_checkpoint_converters() -> list[CheckpointConverter]:
    return [
        CheckpointConverter(
            name="transformers-bert",
            architecture="bert",
            detect="foundry_plugin_bert.model:is_transformers_bert",
            convert="foundry_plugin_bert.model:from_transformers",
            description="a transformers directory whose config.json has model_type bert",
        )
    ]


@hookimpl
def foundry_exporters() -> list[Exporter]:
    return [
        Exporter("bert", "hf", "foundry_plugin_bert.model:to_transformers",
                 "a transformers directory that AutoModelForMaskedLM.from_pretrained loads")
    ]
