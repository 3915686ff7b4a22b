"""The ``model`` section of a BERT config, and its presets (plain attrs: no torch here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import attrs

from model_foundry.blocks import TransformerConfig, require_embedding_size_equal_hidden
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


def _preset(layers: int, hidden: int, heads: int, intermediate: int, length: int, dropout: float = 0.1) -> dict:
    return {
        "transformer": {
            "layers": layers,
            "hidden_size": hidden,
            "attention_heads": heads,
            "intermediate_hidden_size": intermediate,
            "max_position_embeddings": length,
            "dropout": dropout,
            "attention_dropout": dropout,
        }
    }


# Sizes of the GPT-2 / BERT architectures guide; "tiny" is for tests and smoke runs.
PRESETS = {
    "tiny": _preset(layers=2, hidden=64, heads=4, intermediate=256, length=128, dropout=0.0),
    "small": _preset(layers=6, hidden=512, heads=8, intermediate=2048, length=256),
    "base": _preset(layers=12, hidden=768, heads=12, intermediate=3072, length=512),
    "large": _preset(layers=24, hidden=1024, heads=16, intermediate=4096, length=1024),
}
