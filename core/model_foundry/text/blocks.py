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
from model_foundry.presets import Presets

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


@attrs.frozen
class TransformerLanguageModelConfig:
    """The ``model`` fields of a language model whose token embeddings feed a stack of transformer
    blocks directly, with no projection between the two widths (transformers' GPT-2 and BERT).
    An architecture's config class subclasses it, adding its own fields."""

    transformer: TransformerConfig = option(factory=TransformerConfig, doc="sizes of the transformer stack")
    vocab_size: int | None = option(
        None, doc="vocabulary size; null takes it from the tokenizer (len(tokenizer) or tokenizer.vocab_size)",
        validator=positive,
    )
    tie_word_embeddings: bool = option(True, doc="share the token embedding matrix with the output layer")

    def validate(self) -> Iterator[tuple[str, str]]:
        block = self.transformer
        if block.embedding_size is not None and block.embedding_size != block.hidden_size:
            yield "transformer.embedding_size", (
                f"embedding_size must equal hidden_size ({block.hidden_size}) here, got {block.embedding_size}: the "
                f"token embeddings feed the blocks directly, with no projection between the two widths; set "
                f"embedding_size to {block.hidden_size} or remove it"
            )


def _nearest_multiple(value: int, factor: int) -> int:
    lower = value - value % factor
    return lower if lower > 0 and value - lower <= factor // 2 else lower + factor


def _nearest_divisor(value: int, near: int) -> int:
    divisors = [d for d in range(1, value + 1) if value % d == 0]
    return min(divisors, key=lambda d: (abs(d - near), d))


def transformer_presets(config_class: type[TransformerLanguageModelConfig]) -> Presets:
    """The sizes of the GPT-2 / BERT architectures guide as presets of ``config_class``: ``tiny``
    (for tests and smoke runs: no dropout), ``small``, ``base`` and ``large``."""
    presets = Presets()

    def sized(layers: int, hidden: int, heads: int, length: int, dropout: float = 0.1) -> TransformerLanguageModelConfig:
        block = TransformerConfig(
            layers=layers, hidden_size=hidden, attention_heads=heads, intermediate_hidden_size=4 * hidden,
            max_position_embeddings=length, dropout=dropout, attention_dropout=dropout,
        )
        return config_class(transformer=block)

    @presets.register("tiny")
    def tiny() -> TransformerLanguageModelConfig:
        return sized(layers=2, hidden=64, heads=4, length=128, dropout=0.0)

    @presets.register("small")
    def small() -> TransformerLanguageModelConfig:
        return sized(layers=6, hidden=512, heads=8, length=256)

    @presets.register("base")
    def base() -> TransformerLanguageModelConfig:
        return sized(layers=12, hidden=768, heads=12, length=512)

    @presets.register("large")
    def large() -> TransformerLanguageModelConfig:
        return sized(layers=24, hidden=1024, heads=16, length=1024)

    return presets
