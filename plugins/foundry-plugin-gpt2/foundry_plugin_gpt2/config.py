"""The ``model`` section of a GPT-2 config, and its presets (plain attrs: no torch here)."""

from __future__ import annotations

import attrs

from model_foundry.plugin import TransformerLanguageModelConfig, transformer_presets


@attrs.frozen
class GPT2Config(TransformerLanguageModelConfig):
    """A GPT-2 decoder: causal self-attention blocks with learned positions and a tied LM head."""


# The sizes of the GPT-2 / BERT architectures guide: tiny, small, base, large.
PRESETS = transformer_presets(GPT2Config)
