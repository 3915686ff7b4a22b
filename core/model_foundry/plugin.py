"""Everything a plugin author imports, in one place: the stable surface of Model Foundry for plugins.

    from model_foundry.plugin import hookimpl, ArchitectureSchema, Capabilities, ModelBuilder, option, positive

A name here keeps its meaning across the releases that share a plugin API (docs/plugins.md,
"Compatibility"); anything imported from another module of the core may change without notice.
Names are imported on first use, each from the module that defines it, so that a plugin's
entry-point module (``plugin.py``: hooks and config classes only) can import from here without
importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_EXPORTS = {
    # Hooks and the records they return (model_foundry.records)
    "hookimpl": "model_foundry.hookspecs",
    **dict.fromkeys(
        ["ArchitectureSchema", "Capabilities", "ModelBuilder", "CollatorSpec", "TokenizerSpec", "CheckpointConverter",
         "Exporter", "TrainingStep", "ModalitySpec", "DatasetSpec", "MetricSpec", "ExtensionSpec"],
        "model_foundry.records",
    ),
    # Config classes: fields with docs and validators; the model section around them
    **dict.fromkeys(["option", "positive", "non_negative", "probability", "unit_interval", "in_range"],
                    "model_foundry.fields"),
    **dict.fromkeys(["ModelConfig", "load_model_config"], "model_foundry.config"),
    # Presets: typed functions returning config objects, registered by name
    "Presets": "model_foundry.presets",
    # Errors a user can fix (exit code 2 from the CLI), and warnings
    **dict.fromkeys(["FoundryError", "ConfigError", "Problem", "FoundryWarning"], "model_foundry.errors"),
    # The model protocol
    **dict.fromkeys(["FoundryModel", "ModelOutput", "require_capability", "batch_examples"], "model_foundry.protocol"),
    # Language models, and the adapter for transformers models
    **dict.fromkeys(["LanguageModel", "causal_lm_loss", "masked_lm_loss", "with_vocab_size", "sdpa_attention_mask"],
                    "model_foundry.text.modeling"),
    **dict.fromkeys(["TransformerConfig", "TransformerLanguageModelConfig", "transformer_presets"],
                    "model_foundry.text.blocks"),
    **dict.fromkeys(["CausalLMCollator", "MaskedLMCollator"], "model_foundry.text.collators"),
    "TransformersArchitecture": "model_foundry.text.hf_architecture",
    "TransformersLanguageModel": "model_foundry.text.hf",
    # Shared networks of the generative plugins
    **dict.fromkeys(["EncoderConfig", "DecoderConfig", "Activation", "NetworkKind", "Normalization", "OutputActivation",
                     "network_kind"],
                    "model_foundry.networks.config"),
    **dict.fromkeys(["MLP", "build_encoder", "build_decoder", "activation", "normalization"],
                    "model_foundry.networks.modules"),
    # Data: what a dataset kind returns, and sample writers' building blocks
    **dict.fromkeys(["DataContext", "LoadedData"], "model_foundry.datasets"),
    "split_arrays": "model_foundry.datasets.arrays",
    **dict.fromkeys(["as_array", "staged", "write_npy", "image_grid", "new_figure", "save_figure", "MAX_CLOUDS"],
                    "model_foundry.modalities"),
    # Metrics: samples drawn the way evaluation draws them, and a model's input key
    **dict.fromkeys(["draw_samples", "input_key_of"], "model_foundry.metrics"),
    # Testing a plugin
    **dict.fromkeys(["check_architecture", "write_distribution", "isolated_registry"], "model_foundry.testing"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model_foundry.plugin' has no attribute {name!r} (the author API: see docs/plugins.md)")


def __dir__() -> list[str]:
    return __all__
