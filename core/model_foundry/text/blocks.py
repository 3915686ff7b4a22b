"""Config blocks shared by several architectures (no torch here: these are plain attrs classes).

:class:`TransformerConfig` is the ``transformer:`` block of a model section, the same for
GPT-2, BERT and any other plugin whose model is a stack of attention blocks::

    model:
      architecture: gpt2
      transformer:
        layers: 12
        hidden_size: 768
        attention_heads: 12
        intermediate_hidden_size: 3072   # null: 4 x hidden_size
        embedding_size: 768              # null: same as hidden_size
        activation_function: gelu
        dropout: 0.1
        attention_dropout: 0.1
        max_position_embeddings: 512
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import attrs

from model_foundry.fields import option, positive, probability

# The activations both transformers' GPT-2 and BERT accept (their ACT2FN names).
Activation = Literal[
    "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish", "tanh", "mish"
]


@attrs.frozen
class TransformerConfig:
    """The sizes and regularisation of a stack of transformer blocks."""

    layers: int = option(12, doc="number of transformer blocks", validator=positive)
    hidden_size: int = option(768, doc="width of the residual stream (d_model)", validator=positive)
    attention_heads: int = option(12, doc="attention heads per block; must divide hidden_size", validator=positive)
    intermediate_hidden_size: int | None = option(
        None, doc="width of the feed-forward layer; null means 4 x hidden_size", validator=positive
    )
    embedding_size: int | None = option(
        None, doc="width of the token embeddings; null means hidden_size", validator=positive
    )
    activation_function: Activation = option("gelu", doc="feed-forward activation (a transformers ACT2FN name)")
    dropout: float = option(0.1, doc="dropout on embeddings and residual branches", validator=probability)
    attention_dropout: float = option(0.1, doc="dropout on attention probabilities", validator=probability)
    max_position_embeddings: int = option(
        512, doc="longest sequence the model accepts (learned position embeddings)", validator=positive
    )
    layer_norm_eps: float | None = option(
        None, doc="layer-norm epsilon; null means the architecture's usual value (see `foundry info ARCH`)",
        validator=positive,
    )
    initializer_range: float = option(0.02, doc="standard deviation of the initial weights", validator=positive)

    @property
    def feed_forward_size(self) -> int:
        """``intermediate_hidden_size``, or its default of four times ``hidden_size``."""
        return self.intermediate_hidden_size or 4 * self.hidden_size

    @property
    def embedding_width(self) -> int:
        """``embedding_size``, or its default of ``hidden_size``."""
        return self.embedding_size or self.hidden_size

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.attention_heads

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.hidden_size % self.attention_heads:
            yield "hidden_size", (
                f"hidden_size ({self.hidden_size}) must be divisible by attention_heads ({self.attention_heads}); "
                f"e.g. hidden_size {_nearest_multiple(self.hidden_size, self.attention_heads)} "
                f"or attention_heads {_nearest_divisor(self.hidden_size, self.attention_heads)}"
            )


def require_embedding_size_equal_hidden(transformer: TransformerConfig, architecture: str) -> Iterator[tuple[str, str]]:
    """For architectures whose token embeddings feed the blocks directly (no projection layer).

    Yields one ``("transformer.embedding_size", message)`` problem, for a model config's
    ``validate()``, when ``embedding_size`` is set and differs from ``hidden_size``.
    """
    if transformer.embedding_size is not None and transformer.embedding_size != transformer.hidden_size:
        yield "transformer.embedding_size", (
            f"{architecture} needs embedding_size equal to hidden_size ({transformer.hidden_size}), got "
            f"{transformer.embedding_size}: its token embeddings feed the blocks directly, with no projection "
            f"between the two widths; set embedding_size to {transformer.hidden_size} or remove it"
        )


def _nearest_multiple(value: int, factor: int) -> int:
    lower = value - value % factor
    return lower if lower > 0 and value - lower <= factor // 2 else lower + factor


def _nearest_divisor(value: int, near: int) -> int:
    divisors = [d for d in range(1, value + 1) if value % d == 0]
    return min(divisors, key=lambda d: (abs(d - near), d))


def transformer_sizes(
    layers: int, hidden: int, heads: int, intermediate: int, length: int, dropout: float = 0.1
) -> dict:
    """A preset's ``transformer:`` block as plain data, for an architecture's presets table."""
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
