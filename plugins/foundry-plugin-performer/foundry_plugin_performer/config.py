"""Config classes and presets of the ``performer`` architecture, in the model factory guide's shape.

A ``model`` section names a ``model_type`` (encoder, decoder or encoder_decoder) and gives
the matching ``encoder:`` / ``decoder:`` blocks; a ``global_config:`` block holds defaults
that both blocks inherit (their own keys win). Without ``vocab_size`` the model maps input
embeddings to hidden states, as in the guide; with it (or with a tokenizer in the same
file) it is a token-level language model. No torch here: ``foundry list`` imports this.
"""

from __future__ import annotations

import re
from typing import Iterator, Literal, Optional

import attrs

from model_foundry.plugin import Presets, option, positive, probability

ModelType = Literal["encoder", "decoder", "encoder_decoder"]
AttentionType = Literal["softmax", "linear", "causal_linear"]
Activation = Literal["GELU", "RELU", "SILU", "GEGLU", "REGLU", "SWIGLU"]
PositionEncoding = Literal["rotary", "none"]

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu|meta)(:\d+)?$")


def _device(_instance: object, _attribute: object, value: Optional[str]) -> None:
    if value is not None and not _DEVICE.match(value):
        raise ValueError(f"must be a torch device such as cpu, cuda or cuda:0, got {value!r}")


@attrs.frozen
class PerformerBlockConfig:
    """One stack of Performer layers: the guide's ``encoder:`` or ``decoder:`` block."""

    d_model: int = option(doc="model width: size of the input embeddings and of the hidden states", validator=positive)
    num_layers: int = option(6, doc="number of layers in the stack", validator=positive)
    num_heads: int = option(8, doc="attention heads; must divide d_model", validator=positive)
    d_ff: int = option(4, doc="feed-forward expansion factor: the hidden layer has d_ff * d_model units", validator=positive)
    dropout: float = option(0.1, doc="dropout on attention outputs, feed-forward layers and embeddings", validator=probability)
    attention_type: AttentionType = option(
        "softmax",
        doc="softmax (exact, O(n^2), through torch SDPA), linear (bidirectional FAVOR+, O(n)) or "
        "causal_linear (causal FAVOR+, O(n), decoders only)",
    )
    activation: Activation = option(
        "GELU", doc="feed-forward activation: GELU, RELU, SILU, or the gated GEGLU, REGLU, SWIGLU"
    )
    nb_features: Optional[int] = option(
        None, doc="random features of FAVOR+ attention; null: d_head * ln(d_head). Unused by softmax", validator=positive
    )
    use_cross_attention: Optional[bool] = option(
        None, doc="decoder only: attend to the encoder's output; null means true in an encoder_decoder, else false"
    )
    use_rezero: bool = option(False, doc="ReZero residuals (a learned gain that starts at 0) instead of LayerNorm")
    use_scalenorm: bool = option(False, doc="PreScaleNorm (L2 normalisation with one learned gain) instead of LayerNorm")
    feature_redraw_interval: Optional[int] = option(
        1000, doc="redraw FAVOR+ projections every this many training steps; null never redraws", validator=positive
    )
    auto_check_redraw: bool = option(
        True,
        doc="when no training loop calls on_optimizer_step, count training forward passes and redraw on that "
        "schedule instead; false leaves redraws to on_optimizer_step and redraw_projections()",
    )
    position_encoding: PositionEncoding = option(
        "rotary", doc="rotary position embeddings on queries and keys of self-attention, or none"
    )
    device: Optional[str] = option(
        None, doc="device to build on (cpu, cuda, cuda:0); null: torch's default device", validator=_device
    )
    batch_size: int = option(
        32, doc="the guide's batch size, recorded with the model; training uses training.batch_size", validator=positive
    )

    @property
    def uses_favor(self) -> bool:
        return self.attention_type != "softmax"

    def problems(self, role: str) -> Iterator[tuple[str, str]]:
        """Cross-field problems of this block as ``(key, message)``, keys relative to the block."""
        if self.d_model % self.num_heads:
            yield "num_heads", f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})"
        if self.use_rezero and self.use_scalenorm:
            yield "use_scalenorm", "use_rezero and use_scalenorm are alternatives; set only one of them"
        if role == "encoder" and self.attention_type == "causal_linear":
            yield "attention_type", (
                "an encoder attends in both directions; causal_linear is for decoders, use linear (FAVOR+) or softmax"
            )
        if role == "encoder" and self.use_cross_attention:
            yield "use_cross_attention", "only a decoder can cross-attend (to the encoder's output)"
        if role == "decoder" and self.attention_type == "linear":
            yield "attention_type", (
                "a decoder attends causally; linear is bidirectional, use causal_linear (FAVOR+) or softmax "
                "(with a causal mask)"
            )


@attrs.frozen
class PerformerConfig:
    """A Performer model: an encoder, a decoder, or both, built from the guide's blocks."""

    __foundry_global_defaults__ = ("global_config", ("encoder", "decoder"))

    model_type: ModelType = option(doc="encoder, decoder or encoder_decoder; says which blocks are needed")
    name: Optional[str] = option(None, doc="a name for the model, recorded with it")
    encoder: Optional[PerformerBlockConfig] = option(None, doc="the encoder stack (model_type encoder or encoder_decoder)")
    decoder: Optional[PerformerBlockConfig] = option(None, doc="the decoder stack (model_type decoder or encoder_decoder)")
    vocab_size: Optional[int] = option(
        None,
        doc="vocabulary size: set (or take it from a tokenizer) for a token-level language model with embeddings "
        "and an LM head; null maps input embeddings to hidden states, as in the guide",
        validator=positive,
    )
    tie_word_embeddings: bool = option(True, doc="token-level models: share the embedding matrix with the LM head")

    @property
    def roles(self) -> tuple[str, ...]:
        """The blocks this model_type uses, in the order data flows through them."""
        return ("encoder", "decoder") if self.model_type == "encoder_decoder" else (self.model_type,)

    def block(self, role: str) -> PerformerBlockConfig:
        block = getattr(self, role)
        assert block is not None, f"validated configs have a {role} block"
        return block

    def cross_attends(self) -> bool:
        """Whether the decoder attends to an encoder (the default in an encoder_decoder)."""
        decoder = self.decoder
        if decoder is None or self.model_type != "encoder_decoder":
            return False
        return decoder.use_cross_attention is not False

    def validate(self) -> Iterator[tuple[str, str]]:
        for role in ("encoder", "decoder"):
            block = getattr(self, role)
            if role in self.roles and block is None:
                yield "model_type", f"model_type {self.model_type!r} needs its '{role}' block (with at least d_model)"
            elif role not in self.roles and block is not None:
                yield role, (
                    f"model_type {self.model_type!r} has no {role}; remove this block or set model_type: encoder_decoder"
                )
            elif block is not None:
                for key, message in block.problems(role):
                    yield f"{role}.{key}", message
        if self.model_type == "decoder" and self.decoder is not None and self.decoder.use_cross_attention:
            yield "decoder.use_cross_attention", (
                "a decoder-only model has no encoder to attend to; set it false or use model_type: encoder_decoder"
            )
        if self.model_type == "encoder_decoder" and self.decoder is not None:
            if self.decoder.use_cross_attention is False:
                yield "decoder.use_cross_attention", (
                    "the decoder of an encoder_decoder must attend to the encoder; leave this out or set it true"
                )
            if self.encoder is not None and self.encoder.device != self.decoder.device:
                yield "decoder.device", (
                    f"encoder and decoder must be on one device (encoder: {self.encoder.device}, "
                    f"decoder: {self.decoder.device}); set device in global_config"
                )
            if self.vocab_size is not None:
                yield "vocab_size", (
                    "token-level encoder_decoder models are not provided: the training loop has no seq2seq "
                    "objective; leave vocab_size out for an embedding-level seq2seq(source, target) model, or use "
                    "model_type decoder (causal_lm) or encoder (masked_lm)"
                )

    def objectives(self) -> tuple[str, ...]:
        if self.model_type == "decoder":
            return ("causal_lm",)
        if self.model_type == "encoder":
            return ("masked_lm",)
        return ()


PRESETS = Presets()


def _decoder(d_model: int, num_layers: int, num_heads: int, nb_features: int, dropout: float = 0.1) -> PerformerConfig:
    block = PerformerBlockConfig(
        d_model=d_model, num_layers=num_layers, num_heads=num_heads, dropout=dropout, attention_type="causal_linear",
        activation="SWIGLU", nb_features=nb_features,
    )
    return PerformerConfig(model_type="decoder", decoder=block)


def _as_encoder(decoder: PerformerConfig) -> PerformerConfig:
    """The encoder of a decoder preset's sizes: bidirectional FAVOR+ and GEGLU."""
    block = attrs.evolve(decoder.decoder, attention_type="linear", activation="GEGLU")
    return PerformerConfig(model_type="encoder", encoder=block)


@PRESETS.register("tiny")
def tiny() -> PerformerConfig:
    # For tests: two layers, a few features, no dropout so that outputs are deterministic.
    return _decoder(32, 2, 4, 16, dropout=0.0)


@PRESETS.register("small")
def small() -> PerformerConfig:
    return _decoder(256, 4, 4, 128)


@PRESETS.register("base")
def base() -> PerformerConfig:
    return _decoder(512, 12, 8, 256)


@PRESETS.register("large")
def large() -> PerformerConfig:
    return _decoder(1024, 24, 16, 256)


@PRESETS.register("tiny-encoder")
def tiny_encoder() -> PerformerConfig:
    return _as_encoder(tiny())


@PRESETS.register("base-encoder")
def base_encoder() -> PerformerConfig:
    return _as_encoder(base())
