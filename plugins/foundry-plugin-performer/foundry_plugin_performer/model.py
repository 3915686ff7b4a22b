"""Performer models: layers, stacks, the guide's embedding-level models and the token-level LMs.

Reading order follows the data: rotary positions, attention (softmax through SDPA, or
FAVOR+ from :mod:`foundry_plugin_performer.attention`), feed-forward (plain or gated),
the residual wrapper (pre-LayerNorm, PreScaleNorm or ReZero), a layer, a stack with its
feature-redraw schedule, then the models that :func:`build` returns:

* embedding-level (no ``vocab_size``, as in the guide): :class:`PerformerEncoder`,
  :class:`PerformerDecoder`, :class:`PerformerEncoderDecoder`, mapping ``(batch, length,
  d_model)`` input embeddings to hidden states of the same width;
* token-level: :class:`PerformerForCausalLM` (decoder, causal_lm, recurrent-state generation)
  and :class:`PerformerForMaskedLM` (encoder, masked_lm).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_performer.attention import FavorAttention
from foundry_plugin_performer.config import PerformerBlockConfig, PerformerConfig
from model_foundry.plugin import (
    FoundryError,
    LanguageModel,
    ModelConfig,
    ModelOutput,
    causal_lm_loss,
    masked_lm_loss,
    sdpa_attention_mask,
)

# --- positions ------------------------------------------------------------------------------


class RotaryEmbedding(nn.Module):
    """Rotary position embeddings: rotate query/key pairs by position-dependent angles.

    Relative positions survive the FAVOR+ feature map, and nothing bounds the length.
    The frequencies are a non-persistent buffer: they are no state-dict entry.
    """

    def __init__(self, dim_head: int, base: float = 10_000.0):
        super().__init__()
        self.register_buffer(
            "inv_freq", 1.0 / base ** (torch.arange(0, dim_head, 2, dtype=torch.float32) / dim_head), persistent=False
        )

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        positions = torch.arange(offset, offset + x.size(-2), device=x.device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq[None, :]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
        return rotated.flatten(-2)


# --- attention ------------------------------------------------------------------------------


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, causal: bool
) -> torch.Tensor:
    """Exact attention through torch SDPA; ``key_mask`` (batch, keys) is True on real tokens."""
    mask, is_causal = sdpa_attention_mask(key_mask, q.size(-2), k.size(-2), causal, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


class Attention(nn.Module):
    """Multi-head self- or cross-attention: softmax through SDPA, or FAVOR+ (linear / causal_linear).

    Self-attention of a decoder is causal; cross-attention (queries from the decoder, keys
    and values from the encoder's output) is bidirectional and has no rotary positions.
    """

    def __init__(self, block: PerformerBlockConfig, causal: bool, context_dim: int | None = None):
        super().__init__()
        self.heads = block.num_heads
        self.dim_head = block.d_model // block.num_heads
        self.causal = causal
        self.to_q = nn.Linear(block.d_model, block.d_model)
        self.to_kv = nn.Linear(context_dim or block.d_model, 2 * block.d_model)
        self.to_out = nn.Linear(block.d_model, block.d_model)
        self.dropout = nn.Dropout(block.dropout)
        self.favor = (
            FavorAttention(self.dim_head, nb_features=block.nb_features, causal=causal) if block.uses_favor else None
        )
        rotary = block.position_encoding == "rotary" and context_dim is None
        self.rotary = RotaryEmbedding(self.dim_head) if rotary else None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.dim_head).transpose(1, 2)

    def _project(self, x: torch.Tensor, context: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, ...]:
        q = self._split(self.to_q(x))
        k, v = (self._split(t) for t in self.to_kv(context).chunk(2, dim=-1))
        if self.rotary is not None:
            q, k = self.rotary(q, offset), self.rotary(k, offset)
        return q, k, v

    def _merge(self, out: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = out.shape
        return self.dropout(self.to_out(out.transpose(1, 2).reshape(batch, length, -1)))

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        """``key_mask`` (batch, keys) is True on real tokens; ``causal`` overrides softmax masking."""
        q, k, v = self._project(x, x if context is None else context)
        if self.favor is not None:
            out = self.favor(q, k, v, key_padding_mask=_padding(key_mask))
        else:
            out = softmax_attention(q, k, v, key_mask, self.causal if causal is None else causal)
        return self._merge(out)

    def step(self, x: torch.Tensor, cache: Any, position: int) -> tuple[torch.Tensor, Any]:
        """Causal self-attention over new positions ``position, position + 1, ...`` after ``cache``.

        The cache is FAVOR+'s recurrent state (constant size) or, for softmax, the keys and values so far.
        """
        q, k, v = self._project(x, x, offset=position)
        if self.favor is not None:
            out, cache = self.favor.step(q, k, v, cache)
            return self._merge(out), cache
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=-2), torch.cat([cache[1], v], dim=-2)
        queries = torch.arange(position, position + q.size(-2), device=q.device)
        allowed = torch.arange(k.size(-2), device=q.device)[None, :] <= queries[:, None]
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)), (k, v)


def _padding(key_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Our masks are True on real tokens; FavorAttention's key_padding_mask is True on padding."""
    return None if key_mask is None else ~key_mask


# --- feed-forward and residuals ---------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "GELU": F.gelu, "RELU": F.relu, "SILU": F.silu, "GEGLU": F.gelu, "REGLU": F.relu, "SWIGLU": F.silu,
}


class FeedForward(nn.Module):
    """``d_model -> d_ff * d_model -> d_model``; the *GLU activations gate the hidden layer (Shazeer, 2020)."""

    def __init__(self, block: PerformerBlockConfig):
        super().__init__()
        hidden = block.d_ff * block.d_model
        self.gated = block.activation.endswith("GLU")
        self.activation = ACTIVATIONS[block.activation]
        self.proj_in = nn.Linear(block.d_model, hidden * (2 if self.gated else 1))
        self.proj_out = nn.Linear(hidden, block.d_model)
        self.dropout = nn.Dropout(block.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.proj_in(x)
        if self.gated:
            hidden, gate = hidden.chunk(2, dim=-1)
            hidden = self.activation(hidden) * gate
        else:
            hidden = self.activation(hidden)
        return self.dropout(self.proj_out(self.dropout(hidden)))


class ScaleNorm(nn.Module):
    """``g * x / ||x||`` with one learned gain, started at sqrt(d) (Nguyen & Salazar, 2019)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(math.sqrt(dim)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gain / x.norm(dim=-1, keepdim=True).clamp(min=self.eps))


def make_norm(block: PerformerBlockConfig) -> nn.Module:
    """The normalisation a block uses before each sublayer and after its last layer."""
    if block.use_rezero:
        return nn.Identity()
    return ScaleNorm(block.d_model) if block.use_scalenorm else nn.LayerNorm(block.d_model)


class Residual(nn.Module):
    """``x + f(norm(x))`` (pre-LayerNorm or PreScaleNorm), or ReZero's ``x + gain * f(x)`` with gain = 0 at start."""

    def __init__(self, block: PerformerBlockConfig):
        super().__init__()
        self.norm = make_norm(block)
        self.gain = nn.Parameter(torch.zeros(1)) if block.use_rezero else None

    def add(self, x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return x + (update if self.gain is None else self.gain * update)


# --- layers and stacks ------------------------------------------------------------------------


class PerformerLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each inside a :class:`Residual`."""

    def __init__(self, block: PerformerBlockConfig, causal: bool, context_dim: int | None):
        super().__init__()
        self.self_attention = Attention(block, causal=causal)
        self.self_residual = Residual(block)
        self.cross_attention = Attention(block, causal=False, context_dim=context_dim) if context_dim else None
        self.cross_residual = Residual(block) if context_dim else None
        self.feed_forward = FeedForward(block)
        self.ff_residual = Residual(block)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor | None,
        context_mask: torch.Tensor | None, causal: bool | None,
    ) -> torch.Tensor:
        x = self.self_residual.add(x, self.self_attention(self.self_residual.norm(x), key_mask=mask, causal=causal))
        if self.cross_attention is not None and self.cross_residual is not None:
            if context is None:
                raise FoundryError("this decoder cross-attends: pass the encoder's output as context")
            attended = self.cross_attention(self.cross_residual.norm(x), context=context, key_mask=context_mask)
            x = self.cross_residual.add(x, attended)
        return self.ff_residual.add(x, self.feed_forward(self.ff_residual.norm(x)))

    def step(self, x: torch.Tensor, cache: Any, position: int) -> tuple[torch.Tensor, Any]:
        attended, cache = self.self_attention.step(self.self_residual.norm(x), cache, position)
        x = self.self_residual.add(x, attended)
        return self.ff_residual.add(x, self.feed_forward(self.ff_residual.norm(x))), cache


class PerformerStack(nn.Module):
    """A block's layers and final norm, and the schedule on which its FAVOR+ features are redrawn.

    Redraws happen on training steps only: :meth:`on_optimizer_step` redraws exactly every
    ``feature_redraw_interval`` steps. Until a training loop calls it, and when
    ``auto_check_redraw`` is true, the stack counts its own training forward passes instead.
    """

    def __init__(self, block: PerformerBlockConfig, causal: bool, context_dim: int | None = None):
        super().__init__()
        self.block = block
        self.causal = causal
        self.layers = nn.ModuleList(PerformerLayer(block, causal, context_dim) for _ in range(block.num_layers))
        self.norm = make_norm(block)
        self.training_passes = 0
        self.driven_by_optimizer = False

    def favor_attentions(self) -> list[FavorAttention]:
        return [m for m in self.modules() if isinstance(m, FavorAttention)]

    def redraw_projections(self, generator: torch.Generator | None = None) -> None:
        for favor in self.favor_attentions():
            favor.redraw_projection(generator=generator)

    def on_optimizer_step(self, step: int) -> None:
        self.driven_by_optimizer = True
        interval = self.block.feature_redraw_interval
        if self.training and interval and step > 0 and step % interval == 0:
            self.redraw_projections()

    def _count_training_pass(self) -> None:
        interval = self.block.feature_redraw_interval
        if not self.training or self.driven_by_optimizer or not self.block.auto_check_redraw or not interval:
            return
        if self.training_passes and self.training_passes % interval == 0:
            self.redraw_projections()
        self.training_passes += 1

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None, causal: bool | None = None,
    ) -> torch.Tensor:
        self._count_training_pass()
        for layer in self.layers:
            x = layer(x, mask, context, context_mask, causal)
        return self.norm(x)

    def step(self, x: torch.Tensor, caches: list[Any], position: int) -> tuple[torch.Tensor, list[Any]]:
        """New positions from ``position`` on, through every layer; ``caches`` holds one state per layer (None at first)."""
        new_caches = []
        for layer, cache in zip(self.layers, caches, strict=True):
            x, cache = layer.step(x, cache, position)
            new_caches.append(cache)
        return self.norm(x), new_caches


# --- models -----------------------------------------------------------------------------------


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class PerformerModel(LanguageModel):
    """What every Performer model shares: its stacks, feature redraws, and unbounded length."""

    stack_names: tuple[str, ...] = ()

    @property
    def params(self) -> PerformerConfig:
        return self.config.params

    @property
    def max_sequence_length(self) -> int | None:
        return None  # rotary (or no) positions and linear attention: no length limit

    def stacks(self) -> list[PerformerStack]:
        return [getattr(self, name) for name in self.stack_names]

    def on_optimizer_step(self, step: int) -> None:
        """Called by the training loop after optimizer step ``step`` (1-based): redraws features on schedule."""
        for stack in self.stacks():
            stack.on_optimizer_step(step)

    def redraw_projections(self, generator: torch.Generator | None = None) -> None:
        """Draw new FAVOR+ random features now, in every attention layer."""
        for stack in self.stacks():
            stack.redraw_projections(generator)

    def get_input_embeddings(self) -> nn.Module:
        raise FoundryError(
            f"this performer {self.params.model_type} has no token embeddings: it maps input embeddings to hidden "
            "states; set model.vocab_size (or a tokenizer) for a token-level model"
        )


class PerformerEncoder(PerformerModel):
    """The guide's encoder: ``encoder(input_embeddings, mask=None)`` -> hidden states, same shape."""

    stack_names = ("encoder",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.encoder = PerformerStack(self.params.block("encoder"), causal=False)
        self.apply(init_weights)

    def forward(self, input_embeddings: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` (batch, length) is True (or 1) on real positions; padded ones are never attended to."""
        return self.encoder(_embeddings(input_embeddings, self.encoder, "input_embeddings"), mask=_bool_mask(mask))


class PerformerDecoder(PerformerModel):
    """The guide's decoder-only model: ``lm(x, use_causal_mask=True)`` -> hidden states, same shape."""

    stack_names = ("decoder",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.decoder = PerformerStack(self.params.block("decoder"), causal=True)
        self.apply(init_weights)

    def forward(
        self, x: torch.Tensor, use_causal_mask: bool = True, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``use_causal_mask=False`` runs softmax attention bidirectionally; causal_linear is always causal."""
        causal = _causal_flag(self.decoder, use_causal_mask)
        return self.decoder(_embeddings(x, self.decoder, "x"), mask=_bool_mask(mask), causal=causal)


class PerformerEncoderDecoder(PerformerModel):
    """The guide's seq2seq model: ``seq2seq(source, target)`` -> decoder hidden states, shaped like ``target``."""

    stack_names = ("encoder", "decoder")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        encoder = self.params.block("encoder")
        self.encoder = PerformerStack(encoder, causal=False)
        self.decoder = PerformerStack(self.params.block("decoder"), causal=True, context_dim=encoder.d_model)
        self.apply(init_weights)

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, source_mask: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None, use_causal_mask: bool = True,
    ) -> torch.Tensor:
        source_mask, target_mask = _bool_mask(source_mask), _bool_mask(target_mask)
        memory = self.encoder(_embeddings(source, self.encoder, "source"), mask=source_mask)
        causal = _causal_flag(self.decoder, use_causal_mask)
        target = _embeddings(target, self.decoder, "target")
        return self.decoder(target, mask=target_mask, context=memory, context_mask=source_mask, causal=causal)


def _embeddings(x: torch.Tensor, stack: PerformerStack, name: str) -> torch.Tensor:
    """``x`` itself, once it is checked to be float embeddings ``(batch, length, d_model)``."""
    d_model = stack.block.d_model
    if not torch.is_floating_point(x) or x.dim() != 3 or x.size(-1) != d_model:
        raise FoundryError(
            f"{name} must be float embeddings of shape (batch, length, {d_model}), got {x.dtype} {tuple(x.shape)}; "
            "this model has no vocabulary: set model.vocab_size (or a tokenizer) to feed token ids"
        )
    return x


def _bool_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask.bool()


def _causal_flag(stack: PerformerStack, use_causal_mask: bool | None) -> bool | None:
    """Check a ``use_causal_mask`` request against the stack's attention (None keeps the stack's own)."""
    kind = stack.block.attention_type
    if use_causal_mask is False and kind == "causal_linear":
        raise FoundryError(
            "causal_linear attention is causal by construction; use_causal_mask=False needs attention_type softmax"
        )
    if use_causal_mask and kind == "linear":
        raise FoundryError("linear attention is bidirectional; a causal pass needs attention_type causal_linear or softmax")
    return use_causal_mask


class PerformerTokenModel(PerformerModel):
    """Token embeddings, one stack, a final norm and an LM head (tied to the embeddings by default)."""

    role: str = ""
    causal: bool = False
    vocabulary_layers = ("embeddings", "lm_head")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        block = self.params.block(self.role)
        vocab_size = self.params.vocab_size
        assert vocab_size is not None, "build() checks vocab_size"
        self.embeddings = nn.Embedding(vocab_size, block.d_model)
        self.embedding_dropout = nn.Dropout(block.dropout)
        setattr(self, self.role, PerformerStack(block, causal=self.causal))
        self.lm_head = nn.Linear(block.d_model, vocab_size, bias=False)
        self.apply(init_weights)
        self.tie_weights()

    @property
    def stack(self) -> PerformerStack:
        return getattr(self, self.role)

    def stacks(self) -> list[PerformerStack]:
        return [self.stack]

    def tie_weights(self) -> None:
        if self.params.tie_word_embeddings:
            self.lm_head.weight = self.embeddings.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings

    def init_vocabulary_layer(self, layer: nn.Module) -> None:
        init_weights(layer)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
        use_causal_mask: bool | None = None, **_: Any,
    ) -> ModelOutput:
        """``attention_mask`` is 1 on tokens, 0 on padding; ``use_causal_mask`` as in :class:`PerformerDecoder`."""
        embedded = self.embedding_dropout(self.embeddings(input_ids))
        causal = _causal_flag(self.stack, use_causal_mask)
        hidden = self.stack(embedded, mask=_bool_mask(attention_mask), causal=causal)
        logits = self.lm_head(hidden)
        loss = None if labels is None else self.loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, hidden_states=hidden)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PerformerForCausalLM(PerformerTokenModel):
    """A decoder-only Performer language model; generation carries each layer's recurrent state.

    With causal_linear attention each new token costs the same time and memory however long
    the sequence already is (the FAVOR+ prefix sums are the whole state); with softmax the
    state is a key/value cache.
    """

    role = "decoder"
    causal = True

    @property
    def supports_generation(self) -> bool:
        return True

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return causal_lm_loss(logits, labels)

    def next_token_logits(self, input_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Continue from ``state`` = (position, one cache per layer): the prompt goes in one chunkwise pass,
        each later token costs one constant-size state update per layer."""
        position, caches = state if state is not None else (0, [None] * len(self.stack.layers))
        hidden, caches = self.stack.step(self.embeddings(input_ids), caches, position)
        return self.lm_head(hidden[:, -1, :]), (position + input_ids.size(1), caches)


class PerformerForMaskedLM(PerformerTokenModel):
    """An encoder-only Performer trained with masked language modelling; padded keys are never attended to."""

    role = "encoder"
    causal = False

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return masked_lm_loss(logits, labels)


# --- the builder ------------------------------------------------------------------------------

EMBEDDING_MODELS: dict[str, type[PerformerModel]] = {
    "encoder": PerformerEncoder,
    "decoder": PerformerDecoder,
    "encoder_decoder": PerformerEncoderDecoder,
}
TOKEN_MODELS: dict[str, type[PerformerTokenModel]] = {"encoder": PerformerForMaskedLM, "decoder": PerformerForCausalLM}


def build(model_config: ModelConfig) -> PerformerModel:
    """Build the model a ``performer`` config describes (see the module docstring for which class)."""
    params: PerformerConfig = model_config.params
    if params.vocab_size is None:
        model_class: type[PerformerModel] = EMBEDDING_MODELS[params.model_type]
    elif params.model_type in TOKEN_MODELS:
        model_class = TOKEN_MODELS[params.model_type]
    else:
        raise FoundryError(
            "token-level encoder_decoder performer models are not provided (no seq2seq objective); leave "
            "model.vocab_size unset and no tokenizer for seq2seq(source, target) on embeddings"
        )
    with _requested_device(params):
        return model_class(model_config)


def _requested_device(params: PerformerConfig) -> contextlib.AbstractContextManager[Any]:
    """The blocks' ``device``, unless the caller already chose one (``create_model(device=...)``)."""
    device = params.block(params.roles[0]).device
    if device is None or torch.get_default_device().type != "cpu":
        return contextlib.nullcontext()
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise FoundryError(f"model.{params.roles[0]}.device is {device!r} but CUDA is not available here; use cpu")
    return torch.device(device)
