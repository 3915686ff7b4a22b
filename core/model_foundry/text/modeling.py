"""The text branch of the model protocol: language models and the pieces they all need.

A plugin's language model subclasses :class:`LanguageModel` (a
:class:`~model_foundry.protocol.FoundryModel`), implements ``forward`` and
``get_input_embeddings``, names its ``vocabulary_layers`` (``resize_token_embeddings`` resizes
them), overrides the ``supports_generation`` property when it generates, and — for fast
generation — overrides :meth:`LanguageModel.next_token_logits` to carry a cache or recurrent
state from one step to the next.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from model_foundry.config import ModelConfig
from model_foundry.errors import FoundryError
from model_foundry.protocol import FoundryModel, ModelOutput, unique_parameters
from model_foundry.text.config import TokenizerConfig

__all__ = [
    "LanguageModel", "ModelOutput", "causal_lm_loss", "masked_lm_loss", "sample_next_token", "sdpa_attention_mask",
    "with_vocab_size",
]


def with_vocab_size(config: ModelConfig) -> ModelConfig:
    """``config`` with ``vocab_size`` set, for builders of token-level models.

    A null ``vocab_size`` takes the size of the tokenizer ``foundry train`` trains for a config
    without a tokenizer section (``TokenizerConfig().vocab_size``); training always sets the
    real ``len(tokenizer)`` before building, and a config with a tokenizer section gets its
    ``tokenizer.vocab_size`` from ``create_model``.
    """
    if config.vocab_size is not None:
        return config
    return config.evolve(vocab_size=TokenizerConfig().vocab_size)


def sdpa_attention_mask(
    padding_mask: torch.Tensor | None, query_length: int, key_length: int, causal: bool, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """The ``attn_mask`` (True: may attend) and ``is_causal`` arguments of scaled_dot_product_attention.

    ``padding_mask`` is (batch, key_length), true on real tokens. Queries are the last
    ``query_length`` of ``key_length`` positions (the others are cached). Without padding the
    causal case keeps SDPA's own ``is_causal`` fast path where it can.
    """
    if padding_mask is None and (not causal or query_length == key_length):
        return None, causal and query_length > 1
    keys = torch.arange(key_length, device=device)[None, :]
    queries = torch.arange(query_length, device=device)[:, None] + (key_length - query_length)
    visible = keys <= queries if causal else torch.ones(query_length, key_length, dtype=torch.bool, device=device)
    if padding_mask is not None:
        visible = visible & padding_mask.bool()[:, None, None, :]
        # A padding query may have no visible key at all (left padding), and softmax over
        # nothing is NaN; letting every query see itself changes no real position's output.
        visible = visible | (keys == queries)
    return visible, False


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts label t+1; -100 labels are ignored."""
    shifted = logits[:, :-1, :].reshape(-1, logits.size(-1))
    return nn.functional.cross_entropy(shifted.float(), labels[:, 1:].reshape(-1), ignore_index=-100)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the positions whose label is not -100."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100)


def sample_next_token(
    logits: torch.Tensor,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token from ``(batch, vocab)`` logits: greedy, or sampled with temperature/top-k/top-p."""
    if not do_sample:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise FoundryError(f"temperature must be > 0, got {temperature}")
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probabilities = logits.softmax(dim=-1)
    if generator is not None and generator.device != probabilities.device:
        # Drawn where the generator lives: a seeded CPU generator gives the same tokens on any device.
        return torch.multinomial(probabilities.to(generator.device), 1, generator=generator).squeeze(-1).to(logits.device)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


def with_rows(layer: nn.Module, rows: int, init: Callable[[nn.Module], None]) -> nn.Module:
    """A copy of an ``nn.Embedding`` or ``nn.Linear`` with one row per token, with ``rows`` rows:
    the first rows (and biases) are the layer's, the new ones are set by ``init``."""
    weight = layer.weight
    if isinstance(layer, nn.Embedding):
        fresh: nn.Module = nn.Embedding(rows, layer.embedding_dim, device=weight.device, dtype=weight.dtype)
    else:
        fresh = nn.Linear(layer.in_features, rows, bias=layer.bias is not None, device=weight.device, dtype=weight.dtype)
    init(fresh)
    keep = min(rows, weight.size(0))
    with torch.no_grad():
        fresh.weight[:keep] = weight[:keep]
        if getattr(layer, "bias", None) is not None:
            fresh.bias[:keep] = layer.bias[:keep]
    return fresh


class LanguageModel(FoundryModel):
    """Base class of language models built by plugins: the text branch of the model protocol.

    ``forward(input_ids, attention_mask=None, labels=None, **kw)`` returns a
    :class:`ModelOutput` with ``logits`` and, when labels are given, ``loss``. The config
    class of a language model has a ``vocab_size`` field (``None``: the tokenizer's size).
    """

    # The longest sequence the model accepts (learned positions), or None when unbounded.
    max_sequence_length: int | None = None
    # The attributes holding layers with one row per token: the token embedding (nn.Embedding)
    # and every output layer (nn.Linear); one may be None where this config has no such layer.
    # resize_token_embeddings resizes them.
    vocabulary_layers: tuple[str, ...] = ()

    @property
    def supports_generation(self) -> bool:
        """Whether :meth:`generate` can continue a prompt with this model as configured: a
        causal model. A model that generates overrides this property (the architecture's
        ``Capabilities.supports_generation`` says whether any of its configs can)."""
        return False

    # -- to implement -------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        raise NotImplementedError

    # -- the vocabulary -----------------------------------------------------------------------
    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Module:
        """Grow or shrink the vocabulary to ``new_num_tokens`` tokens and record it in
        ``config.vocab_size`` (so that a saved model loads again); returns the new embedding.

        The rows of the tokens that remain keep what they learned; new rows are initialised by
        :meth:`init_vocabulary_layer`; tied weights stay tied (:meth:`tie_weights`).
        """
        self.get_input_embeddings()  # a model without token embeddings says so before anything changes
        self.resize_vocabulary_layers(new_num_tokens)
        self.config = self.config.evolve(vocab_size=new_num_tokens)
        return self.get_input_embeddings()

    def resize_vocabulary_layers(self, new_num_tokens: int) -> None:
        """Replace each of ``vocabulary_layers`` by a copy with ``new_num_tokens`` rows, then tie."""
        for name in self.vocabulary_layers:
            layer = getattr(self, name)
            if layer is not None:
                setattr(self, name, with_rows(layer, new_num_tokens, self.init_vocabulary_layer))
        self.tie_weights()

    def init_vocabulary_layer(self, layer: nn.Module) -> None:
        """Initialise a new embedding or output layer as the model initialises its own (the
        default keeps PyTorch's initialisation)."""

    def tie_weights(self) -> None:
        """Share the token embedding matrix with the output layer(s) where the config asks for it
        (the default ties nothing)."""

    def num_parameters(self, trainable_only: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count; tied (shared) tensors count once."""
        embedding_ids = {id(p) for p in self.get_input_embeddings().parameters()} if exclude_embeddings else set()
        return sum(
            p.numel() for p in unique_parameters(self.parameters())
            if id(p) not in embedding_ids and (p.requires_grad or not trainable_only)
        )

    # -- generation ---------------------------------------------------------------------------
    def next_token_logits(self, input_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits for the token after ``input_ids``, and the state for the next call.

        The first call gets the whole prompt and ``state=None``; later calls get only the
        newest token with the state returned before. This default reruns the full
        sequence each time (the state is the sequence so far); models with a KV cache or a
        recurrent state override it to do constant work per token.
        """
        sequence = input_ids if state is None else torch.cat([state, input_ids], dim=1)
        logits = self(input_ids=sequence).logits
        return logits[:, -1, :], sequence

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
        **_: Any,
    ) -> torch.Tensor:
        """Continue ``input_ids`` (batch, length) by up to ``max_new_tokens`` tokens; returns prompt + continuation."""
        if not self.supports_generation:
            raise FoundryError(f"{self.architecture} does not support generation (it is not a causal model)")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        was_training = self.training
        self.eval()
        try:
            output = input_ids
            finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
            logits, state = self.next_token_logits(input_ids, None)
            for step in range(max_new_tokens):
                token = sample_next_token(
                    logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
                )
                if eos_token_id is not None:
                    token = token.masked_fill(finished, eos_token_id)
                    finished |= token == eos_token_id
                output = torch.cat([output, token[:, None]], dim=1)
                if (eos_token_id is not None and bool(finished.all())) or step == max_new_tokens - 1:
                    break
                logits, state = self.next_token_logits(token[:, None], state)
            return output
        finally:
            self.train(was_training)
