"""The ``model`` section of a BERT config, and its presets (plain attrs: no torch here)."""

from __future__ import annotations

from typing import Literal

import attrs

from model_foundry.plugin import TransformerLanguageModelConfig, option, positive, transformer_presets


@attrs.frozen
class BertOptions:
    """What BERT adds to a transformer stack: segment embeddings and a pooled sequence vector."""

    type_vocab_size: int = option(2, doc="number of segment (token type) ids, e.g. 2 for sentence pairs",
                                  validator=positive)
    pooler_type: Literal["first", "mean"] = option(
        "first", doc="how pooled_output() turns token states into one vector: the first ([CLS]) token, or the mean"
    )


@attrs.frozen
class BertConfig(TransformerLanguageModelConfig):
    """A BERT encoder: bidirectional self-attention blocks with a masked-LM head."""

    bert: BertOptions = option(factory=BertOptions, doc="BERT-specific options")


# The sizes of the GPT-2 / BERT architectures guide: tiny, small, base, large.
PRESETS = transformer_presets(BertConfig)
