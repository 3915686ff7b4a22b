"""The ``model`` section of a BERT config, and its presets (plain attrs: no torch here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import attrs

from model_foundry.blocks import TRANSFORMER_PRESETS, TransformerConfig, require_embedding_size_equal_hidden
from model_foundry.schema import option, positive


@attrs.frozen
class BertOptions:
    """What BERT adds to a transformer stack: segment embeddings and a pooled sequence vector."""

    type_vocab_size: int = option(2, doc="number of segment (token type) ids, e.g. 2 for sentence pairs",
                                  validator=positive)
    pooler_type: Literal["first", "mean"] = option(
        "first", doc="how pooled_output() turns token states into one vector: the first ([CLS]) token, or the mean"
    )


@attrs.frozen
class BertConfig:
    """A BERT encoder: bidirectional self-attention blocks with a masked-LM head."""

    transformer: TransformerConfig = option(factory=TransformerConfig, doc="sizes of the transformer stack")
    bert: BertOptions = option(factory=BertOptions, doc="BERT-specific options")
    vocab_size: int | None = option(
        None, doc="vocabulary size; null takes it from the tokenizer (len(tokenizer) or tokenizer.vocab_size)",
        validator=positive,
    )
    tie_word_embeddings: bool = option(True, doc="share the token embedding matrix with the masked-LM output layer")

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from require_embedding_size_equal_hidden(self.transformer, "bert")


# The sizes of the GPT-2 / BERT architectures guide, shared by both plugins.
PRESETS = TRANSFORMER_PRESETS
