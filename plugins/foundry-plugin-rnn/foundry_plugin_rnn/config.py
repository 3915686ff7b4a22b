"""Config classes and presets of the recurrent language models: ``lstm``, ``gru`` and ``rnn``.

The three architectures share one config shape: the token-level fields (``vocab_size``,
``tie_word_embeddings``) and the seed's ``rnn:`` block. The ``rnn`` (Elman) architecture's
block adds the cell's ``nonlinearity``. No torch here: this module is imported by
``foundry list``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import attrs

from model_foundry.plugin import Presets, option, positive, probability

CellType = Literal["rnn", "lstm", "gru"]


@attrs.frozen
class RecurrentBlock:
    """The recurrent stack: sizes, depth, direction and dropout."""

    embedding_size: int = option(256, doc="size of the token embeddings fed to the first layer", validator=positive)
    hidden_size: int = option(512, doc="size of each layer's hidden state (per direction)", validator=positive)
    num_layers: int = option(2, doc="number of stacked recurrent layers", validator=positive)
    bidirectional: bool = option(
        False, doc="read the sequence both ways; bidirectional models train masked_lm and cannot generate"
    )
    dropout: float = option(
        0.1, doc="dropout on the embeddings, between layers and before the output head", validator=probability
    )
    rnn_type: CellType | None = option(
        None, doc="the recurrent cell; null means the architecture's own (lstm, gru or rnn), the only valid value"
    )


@attrs.frozen
class ElmanBlock(RecurrentBlock):
    """The recurrent stack of the plain (Elman) ``rnn`` architecture."""

    nonlinearity: Literal["tanh", "relu"] = option("tanh", doc="the cell's activation: tanh or relu")


@attrs.frozen
class RecurrentLMConfig:
    """A recurrent language model: embeddings, a stack of recurrent layers, a vocabulary head."""

    cell: ClassVar[str]  # the architecture name, which is also its recurrent cell

    vocab_size: int | None = option(
        None, doc="vocabulary size; null takes it from the tokenizer", validator=positive
    )
    tie_word_embeddings: bool = option(
        False,
        doc="share the input embedding matrix with the output head (a projection to embedding_size is "
        "added when the recurrent output has another size)",
    )
    rnn: RecurrentBlock = option(factory=RecurrentBlock, doc="the recurrent stack")

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.rnn.rnn_type is not None and self.rnn.rnn_type != self.cell:
            yield (
                "rnn.rnn_type",
                (
                    f"rnn_type {self.rnn.rnn_type!r} contradicts architecture {self.cell!r}; "
                    f"use 'architecture: {self.rnn.rnn_type}' for a {self.rnn.rnn_type} model, "
                    "or leave rnn_type out (it defaults to the architecture)"
                ),
            )

    def objectives(self) -> tuple[str, ...]:
        # A bidirectional model sees the tokens it would have to predict causally.
        return ("masked_lm",) if self.rnn.bidirectional else ("causal_lm",)

    @property
    def output_size(self) -> int:
        """Features per position coming out of the recurrent stack."""
        return self.rnn.hidden_size * (2 if self.rnn.bidirectional else 1)


@attrs.frozen
class LSTMConfig(RecurrentLMConfig):
    """An LSTM language model."""

    cell: ClassVar[str] = "lstm"


@attrs.frozen
class GRUConfig(RecurrentLMConfig):
    """A GRU language model."""

    cell: ClassVar[str] = "gru"


@attrs.frozen
class RNNConfig(RecurrentLMConfig):
    """A plain (Elman) RNN language model."""

    cell: ClassVar[str] = "rnn"

    rnn: ElmanBlock = option(factory=ElmanBlock, doc="the recurrent stack")


def presets_of(config_class: type[RecurrentLMConfig]) -> Presets:
    """The presets of a recurrent architecture (the same sizes for ``lstm``, ``gru`` and ``rnn``)."""
    presets = Presets()

    def sized(embedding: int, hidden: int, layers: int, dropout: float, tie: bool) -> RecurrentLMConfig:
        default = config_class()
        block = attrs.evolve(default.rnn, embedding_size=embedding, hidden_size=hidden, num_layers=layers, dropout=dropout)
        return attrs.evolve(default, tie_word_embeddings=tie, rnn=block)

    @presets.register("tiny")
    def tiny() -> RecurrentLMConfig:
        return sized(32, 32, 2, 0.0, tie=True)  # for tests: tied, and deep enough for inter-layer dropout

    @presets.register("small")
    def small() -> RecurrentLMConfig:
        return sized(256, 512, 2, 0.1, tie=False)

    @presets.register("base")
    def base() -> RecurrentLMConfig:
        return sized(512, 1024, 3, 0.2, tie=False)

    @presets.register("large")
    def large() -> RecurrentLMConfig:
        return sized(1024, 1536, 4, 0.3, tie=True)  # tied through a 1536 -> 1024 projection

    return presets
