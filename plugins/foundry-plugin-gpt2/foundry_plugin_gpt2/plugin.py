"""Hook implementations of the GPT-2 plugin: what it contributes, named lazily (no torch import)."""

from __future__ import annotations

from foundry_plugin_gpt2.config import PRESETS, GPT2Config
from model_foundry.plugin import ArchitectureSchema, Capabilities, CheckpointConverter, Exporter, ModelBuilder, hookimpl


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="gpt2",
            config_class=GPT2Config,
            family="transformer-decoder",
            description="GPT-2 causal language model (transformers' GPT2LMHeadModel)",
            presets=PRESETS,
            capabilities=Capabilities(objectives=("causal_lm",), supports_generation=True),
        )
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder("gpt2", "foundry_plugin_gpt2.model:build")]


@hookimpl
def foundry_checkpoint_converters() -> list[CheckpointConverter]:
    return [
        CheckpointConverter(
            name="transformers-gpt2",
            architecture="gpt2",
            detect="foundry_plugin_gpt2.model:is_transformers_gpt2",
            convert="foundry_plugin_gpt2.model:from_transformers",
            description="a transformers directory whose config.json has model_type gpt2",
        )
    ]


@hookimpl
def foundry_exporters() -> list[Exporter]:
    return [
        Exporter("gpt2", "hf", "foundry_plugin_gpt2.model:to_transformers",
                 "a transformers directory that AutoModelForCausalLM.from_pretrained loads")
    ]
