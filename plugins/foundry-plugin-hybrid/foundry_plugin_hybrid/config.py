"""The ``hybrid`` architecture's config and presets (no torch here: read by ``foundry list``).

The fields keep the flat names of the hybrid design document (``hidden_size``,
``num_layers``, ``num_heads``, ``intermediate_size``, ``max_length``, ``dropout``); the
encoder and the decoder are both built from them.
"""

from __future__ import annotations

from typing import Iterator, Literal, Optional

import attrs

from model_foundry.plugin import Presets, non_negative, option, positive, probability

TASK_OBJECTIVES = {
    "clm": ("hybrid", "causal_lm"),
    "mlm": ("hybrid", "masked_lm"),
    "both": ("hybrid",),
}


@attrs.frozen
class HybridConfig:
    """A GPT/BERT hybrid: shared embeddings feeding a bidirectional encoder (MLM head) and a causal decoder (LM head)."""

    vocab_size: Optional[int] = option(
        None, doc="vocabulary size; null takes it from the tokenizer", validator=positive
    )
    hidden_size: int = option(768, doc="width of the embeddings and of every layer", validator=positive)
    num_layers: int = option(12, doc="transformer blocks in the encoder, and again in the decoder", validator=positive)
    num_heads: int = option(12, doc="attention heads per block (must divide hidden_size)", validator=positive)
    intermediate_size: int = option(3072, doc="inner width of each feed-forward layer", validator=positive)
    max_length: int = option(512, doc="longest sequence (learned position embeddings)", validator=positive)
    dropout: float = option(0.1, doc="dropout on embeddings, attention weights and residual branches", validator=probability)
    layer_norm_epsilon: float = option(1e-5, doc="epsilon of the layer norms", validator=positive)
    initializer_range: float = option(0.02, doc="standard deviation of the initial weights", validator=positive)
    tie_word_embeddings: bool = option(
        False, doc="use the token embedding matrix as the weight of both output heads"
    )
    task: Literal["mlm", "clm", "both"] = option(
        "both", doc="branches built and trained: mlm (encoder only; cannot generate), clm (decoder only) or both"
    )
    mlm_weight: float = option(0.5, doc="weight of the masked-LM loss when task is both", validator=non_negative)
    clm_weight: float = option(0.5, doc="weight of the causal-LM loss when task is both", validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.hidden_size % self.num_heads:
            yield "num_heads", f"must divide hidden_size ({self.hidden_size}), got {self.num_heads}"
        if self.task == "both" and self.mlm_weight + self.clm_weight == 0:
            yield "mlm_weight", "mlm_weight and clm_weight are both 0 with task 'both'; give at least one a positive weight"

    def objectives(self) -> tuple[str, ...]:
        """Training objectives this config can train: the hybrid one, plus the single one of a one-branch task."""
        return TASK_OBJECTIVES[self.task]


PRESETS = Presets()


@PRESETS.register("tiny")
def tiny() -> HybridConfig:
    # For tests: small, and without dropout so that outputs are deterministic.
    return attrs.evolve(base(), hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=64, dropout=0.0)


@PRESETS.register("small")
def small() -> HybridConfig:
    return attrs.evolve(base(), hidden_size=512, num_layers=6, num_heads=8, intermediate_size=2048, max_length=256)


@PRESETS.register("base")
def base() -> HybridConfig:
    """The sizes of BERT-base and GPT-2 small, for the encoder and again for the decoder."""
    return HybridConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_length=512)


@PRESETS.register("large")
def large() -> HybridConfig:
    return attrs.evolve(base(), hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096, max_length=1024)
