"""The ``model`` section of a GPT-2 config, and its presets (plain attrs: no torch here)."""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from model_foundry.blocks import TRANSFORMER_PRESETS, TransformerConfig, require_embedding_size_equal_hidden
from model_foundry.schema import option, positive


@attrs.frozen
class GPT2Config:
    """A GPT-2 decoder: causal self-attention blocks with learned positions and a tied LM head."""

    transformer: TransformerConfig = option(factory=TransformerConfig, doc="sizes of the transformer stack")
    vocab_size: int | None = option(
        None, doc="vocabulary size; null takes it from the tokenizer (len(tokenizer) or tokenizer.vocab_size)",
        validator=positive,
    )
    tie_word_embeddings: bool = option(True, doc="share the token embedding matrix with the output layer")

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from require_embedding_size_equal_hidden(self.transformer, "gpt2")


# The sizes of the GPT-2 / BERT architectures guide, shared by both plugins.
PRESETS = TRANSFORMER_PRESETS
