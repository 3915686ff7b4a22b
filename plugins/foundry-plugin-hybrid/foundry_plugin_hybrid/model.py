"""The GPT/BERT hybrid, top to bottom.

Shared token and position embeddings feed two stacks of pre-LN transformer blocks: a
bidirectional encoder with a masked-LM head and a causal decoder with a next-token LM
head. ``task`` chooses the branches that are built and run; with both, the loss is
``mlm_weight * mlm_loss + clm_weight * clm_loss``. Generation goes through the decoder
with a key/value cache.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from foundry_plugin_hybrid.config import HybridConfig
from model_foundry.plugin import (
    FoundryError,
    LanguageModel,
    ModelConfig,
    ModelOutput,
    causal_lm_loss,
    masked_lm_loss,
    sdpa_attention_mask,
    with_vocab_size,
)

BRANCHES = {"mlm": ("encoder",), "clm": ("decoder",), "both": ("encoder", "decoder")}  # what each task runs
KeyValue = tuple[Tensor, Tensor]  # one layer's cached keys and values: (batch, heads, length, head_size)


class SelfAttention(nn.Module):
    def __init__(self, config: HybridConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, mask: Optional[Tensor], is_causal: bool, past: Optional[KeyValue] = None
    ) -> tuple[Tensor, KeyValue]:
        batch, length, width = x.shape
        q, k, v = (
            t.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)
            for t in self.qkv(x).split(width, dim=2)
        )
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        y = y.transpose(1, 2).reshape(batch, length, width)
        return self.residual_dropout(self.out(y)), (k, v)


class Block(nn.Module):
    """Pre-LN transformer block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attention = SelfAttention(config)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            nn.GELU(),
            nn.Linear(config.intermediate_size, config.hidden_size),
            nn.Dropout(config.dropout),
        )

    def forward(
        self, x: Tensor, mask: Optional[Tensor], is_causal: bool, past: Optional[KeyValue] = None
    ) -> tuple[Tensor, KeyValue]:
        attended, present = self.attention(self.attention_norm(x), mask, is_causal, past)
        x = x + attended
        x = x + self.feed_forward(self.feed_forward_norm(x))
        return x, present


class TransformerStack(nn.Module):
    """``num_layers`` blocks and a final layer norm, attending bidirectionally or causally."""

    def __init__(self, config: HybridConfig, causal: bool):
        super().__init__()
        self.causal = causal
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    def forward(
        self, x: Tensor, padding_mask: Optional[Tensor] = None, past: Optional[list[KeyValue]] = None
    ) -> tuple[Tensor, list[KeyValue]]:
        past_length = past[0][0].size(2) if past else 0
        mask, is_causal = sdpa_attention_mask(padding_mask, x.size(1), past_length + x.size(1), self.causal, x.device)
        presents = []
        for index, block in enumerate(self.blocks):
            x, present = block(x, mask, is_causal, past[index] if past else None)
            presents.append(present)
        return self.final_norm(x), presents


class HybridModel(LanguageModel):
    """Shared embeddings -> (bidirectional encoder -> MLM head) and (causal decoder -> LM head).

    The config's ``task`` decides which branches exist. ``forward`` takes the causal batch
    (``input_ids``, ``attention_mask``, ``labels``) and, for the encoder, ``mlm_input_ids`` /
    ``mlm_labels`` (the ``hybrid`` collator makes both). ``logits`` are the decoder's next-token logits (the encoder's when only the MLM
    branch runs); ``mlm_logits``, ``clm_loss`` and ``mlm_loss`` are added when computed.
    """

    vocabulary_layers = ("token_embeddings", "mlm_head", "lm_head")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params: HybridConfig = config.params
        self.token_embeddings = nn.Embedding(params.vocab_size, params.hidden_size)
        self.position_embeddings = nn.Embedding(params.max_length, params.hidden_size)
        self.embedding_dropout = nn.Dropout(params.dropout)
        # Only the task's branches are built: no idle parameters (which DDP rejects), and a
        # model without a decoder honestly cannot generate.
        branches = BRANCHES[params.task]
        self.encoder = TransformerStack(params, causal=False) if "encoder" in branches else None
        self.mlm_head = nn.Linear(params.hidden_size, params.vocab_size) if "encoder" in branches else None
        self.decoder = TransformerStack(params, causal=True) if "decoder" in branches else None
        self.lm_head = nn.Linear(params.hidden_size, params.vocab_size) if "decoder" in branches else None
        self.apply(self.init_vocabulary_layer)
        self.tie_weights()

    @property
    def supports_generation(self) -> bool:
        return self.decoder is not None

    @property
    def max_sequence_length(self) -> int:
        return self.config.max_length

    def init_vocabulary_layer(self, module: nn.Module) -> None:
        """The initialisation of every layer here (GPT-2's): normal weights, zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            for head in (self.mlm_head, self.lm_head):
                if head is not None:
                    head.weight = self.token_embeddings.weight

    def embed(self, input_ids: Tensor, padding_mask: Optional[Tensor] = None, offset: int = 0) -> Tensor:
        """Token plus position embeddings; positions count real tokens only, so left padding shifts nothing."""
        length = offset + input_ids.size(1)
        if length > self.config.max_length:
            raise FoundryError(
                f"a sequence of {length} tokens is longer than this model's max_length ({self.config.max_length})"
            )
        if padding_mask is None:
            positions = torch.arange(offset, length, device=input_ids.device)[None, :]
        else:
            positions = (padding_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return self.embedding_dropout(self.token_embeddings(input_ids) + self.position_embeddings(positions))

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        mlm_input_ids: Optional[Tensor] = None,
        mlm_labels: Optional[Tensor] = None,
        task: Optional[str] = None,
        **_: Any,
    ) -> ModelOutput:
        """Run the branches of ``task`` (default: the config's).

        The encoder reads ``mlm_input_ids`` (default ``input_ids``) and is scored against
        ``mlm_labels`` (with task ``mlm`` alone, ``labels`` too, so a ``masked_lm`` batch
        works); the decoder reads ``input_ids`` and is scored against ``labels``.
        """
        task = task or self.config.task
        if task not in BRANCHES:
            raise FoundryError(f"task must be one of {', '.join(BRANCHES)}, got {task!r}")
        for branch in BRANCHES[task]:
            if getattr(self, branch) is None:
                raise FoundryError(
                    f"task {task!r} needs the {branch}, which this model (built with task {self.config.task!r}) does not have"
                )
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: keep SDPA's fast paths
        clm_logits = clm_loss = mlm_logits = mlm_loss = None
        if "decoder" in BRANCHES[task]:
            hidden, _ = self.decoder(self.embed(input_ids, attention_mask), attention_mask)
            clm_logits = self.lm_head(hidden)
            if labels is not None:
                clm_loss = causal_lm_loss(clm_logits, labels)
        if "encoder" in BRANCHES[task]:
            encoder_input = input_ids if mlm_input_ids is None else mlm_input_ids
            hidden, _ = self.encoder(self.embed(encoder_input, attention_mask), attention_mask)
            mlm_logits = self.mlm_head(hidden)
            targets = mlm_labels if mlm_labels is not None else (labels if task == "mlm" else None)
            if targets is not None:
                mlm_loss = masked_lm_loss(mlm_logits, targets)
        if clm_loss is not None and mlm_loss is not None:
            loss = self.config.mlm_weight * mlm_loss + self.config.clm_weight * clm_loss
        else:
            loss = clm_loss if clm_loss is not None else mlm_loss
        return ModelOutput(
            loss=loss,
            logits=clm_logits if clm_logits is not None else mlm_logits,
            mlm_logits=mlm_logits,
            clm_loss=clm_loss,
            mlm_loss=mlm_loss,
        )

    def next_token_logits(self, input_ids: Tensor, state: Optional[list[KeyValue]] = None) -> tuple[Tensor, list[KeyValue]]:
        """Decoder step with a key/value cache: after the prompt, each new token costs one position."""
        offset = state[0][0].size(2) if state else 0
        hidden, cache = self.decoder(self.embed(input_ids, offset=offset), past=state)
        return self.lm_head(hidden[:, -1, :]), cache

    def get_input_embeddings(self) -> nn.Embedding:
        return self.token_embeddings


def build(model_config: ModelConfig) -> HybridModel:
    """The builder named by the plugin: a :class:`HybridModel` from a ``hybrid`` model config."""
    return HybridModel(with_vocab_size(model_config))
