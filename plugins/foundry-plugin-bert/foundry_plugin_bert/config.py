"""The ``model`` section of a BERT config, and its presets (plain attrs: no torch here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import attrs

from model_foundry.plugin import (
    TransformerConfig,
    option,
    positive,
    require_embedding_size_equal_hidden,
    transformer_sizes,
)


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


# The sizes of the GPT-2 / BERT architectures guide; "tiny" is for tests and smoke runs.
PRESETS = {
    "tiny": transformer_sizes(layers=2, hidden=64, heads=4, intermediate=256, length=128, dropout=0.0),
    "small": transformer_sizes(layers=6, hidden=512, heads=8, intermediate=2048, length=256),
    "base": transformer_sizes(layers=12, hidden=768, heads=12, intermediate=3072, length=512),
    "large": transformer_sizes(layers=24, hidden=1024, heads=16, intermediate=4096, length=1024),
}
