"""Hook implementations of foundry-plugin-rnn: the ``lstm``, ``gru`` and ``rnn`` architectures."""

from __future__ import annotations

from foundry_plugin_rnn.config import GRUConfig, LSTMConfig, RNNConfig, presets_of
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl

CONFIGS = {"lstm": LSTMConfig, "gru": GRUConfig, "rnn": RNNConfig}
DESCRIPTIONS = {
    "lstm": "LSTM language model: causal when unidirectional, masked when bidirectional",
    "gru": "GRU language model: causal when unidirectional, masked when bidirectional",
    "rnn": "Elman RNN language model (tanh or relu): causal when unidirectional, masked when bidirectional",
}


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    capabilities = Capabilities(objectives=("causal_lm", "masked_lm"), supports_generation=True, modality="text")
    return [
        ArchitectureSchema(
            name=name,
            config_class=config_class,
            family="recurrent",
            description=DESCRIPTIONS[name],
            presets=presets_of(config_class),
            capabilities=capabilities,
        )
        for name, config_class in CONFIGS.items()
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder(name, "foundry_plugin_rnn.model:build") for name in CONFIGS]
