"""A small architecture used by the core's tests, registered directly (no installation)."""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from model_foundry.fields import option, positive, probability
from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder


@attrs.frozen
class Block:
    layers: int = option(doc="number of blocks", validator=positive)
    hidden_size: int = option(32, doc="width", validator=positive)
    heads: int = option(4, doc="attention heads", validator=positive)
    activation: Literal["gelu", "relu"] = option("gelu", doc="activation")
    dropout: float = option(0.1, doc="dropout", validator=probability)


@attrs.frozen
class ToyConfig:
    """A toy model section."""

    block: Block = option(doc="the blocks")
    vocab_size: Optional[int] = option(None, doc="vocabulary size")
    bidirectional: bool = option(False, doc="bidirectional (masked LM only)")

    def validate(self):
        if self.block.hidden_size % self.block.heads:
            yield "block.hidden_size", f"must be divisible by block.heads ({self.block.heads})"

    def objectives(self):
        return ("masked_lm",) if self.bidirectional else ("causal_lm",)


@attrs.frozen
class Sub:
    width: int = option(8, validator=positive)
    dropout: float = option(0.0, validator=probability)
    device: str = option("cpu")


@attrs.frozen
class TwoPartConfig:
    """Opts into global defaults shared by its encoder and decoder."""

    __foundry_global_defaults__ = ("global_config", ("encoder", "decoder"))
    encoder: Optional[Sub] = None
    decoder: Optional[Sub] = None


def build(model_config):
    from torch import nn

    from model_foundry.text.modeling import LanguageModel, ModelOutput, causal_lm_loss

    class Toy(LanguageModel):
        @property
        def supports_generation(self):
            return True

        def __init__(self, config):
            super().__init__(config)
            width = config.block.hidden_size
            self.embed = nn.Embedding(config.vocab_size or 16, width)
            self.head = nn.Linear(width, config.vocab_size or 16)

        def forward(self, input_ids, attention_mask=None, labels=None, **_):
            logits = self.head(self.embed(input_ids))
            loss = causal_lm_loss(logits, labels) if labels is not None else None
            return ModelOutput(loss=loss, logits=logits)

        def get_input_embeddings(self):
            return self.embed

    return Toy(model_config)


class ToyPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        return [
            ArchitectureSchema(
                "toy",
                ToyConfig,
                family="test",
                description="toy architecture",
                presets={"tiny": lambda: ToyConfig(Block(layers=1, hidden_size=16)), "small": lambda: ToyConfig(Block(2))},
                capabilities=Capabilities(("causal_lm", "masked_lm"), True),
            ),
            ArchitectureSchema("twopart", TwoPartConfig, family="test"),
        ]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("toy", build)]


PLUGIN = ToyPlugin()  # what an entry point "toy_plugin:PLUGIN" loads
