"""GPT-2: transformers' ``GPT2LMHeadModel`` behind the Model Foundry language-model interface.

Read top to bottom: the config mapping, the model (forward, KV-cache generation), the
builder, then the Hugging Face converter and exporter.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import transformers

from model_foundry.plugin import (
    FoundryError,
    ModelConfig,
    ModelOutput,
    TransformersLanguageModel,
    causal_lm_loss,
    export_transformers,
    import_transformers,
    read_transformers_config,
    with_vocab_size,
)

GPT2_LAYER_NORM_EPS = 1e-5


def transformers_config(config: ModelConfig) -> transformers.GPT2Config:
    """The transformers config of the network a Foundry GPT-2 config describes."""
    block = config.transformer
    return transformers.GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=block.max_position_embeddings,
        n_embd=block.hidden_size,
        n_layer=block.layers,
        n_head=block.attention_heads,
        n_inner=block.feed_forward_size,
        activation_function=block.activation_function,
        resid_pdrop=block.dropout,
        embd_pdrop=block.dropout,
        attn_pdrop=block.attention_dropout,
        layer_norm_epsilon=block.layer_norm_eps or GPT2_LAYER_NORM_EPS,
        initializer_range=block.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        # Token ids belong to the tokenizer; the export writes them from it.
        bos_token_id=None,
        eos_token_id=None,
    )


class GPT2LanguageModel(TransformersLanguageModel):
    """A GPT-2 causal language model; ``hf_model`` is the wrapped ``GPT2LMHeadModel``."""

    supports_generation = True
    objective_loss = staticmethod(causal_lm_loss)

    def __init__(self, config: ModelConfig):
        super().__init__(config, transformers.GPT2LMHeadModel(transformers_config(config)))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """Logits for every position; with ``labels``, the next-token loss (-100 labels ignored)."""
        return self.run(
            labels,
            output_hidden_states,
            output_attentions,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
        )

    def next_token_logits(self, input_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One generation step on the KV cache: only the new tokens go through the blocks."""
        seen = state.get_seq_length() if state is not None else 0
        if seen + input_ids.size(1) > self.max_sequence_length:
            raise FoundryError(
                f"gpt2 generation reached {seen + input_ids.size(1)} tokens, past max_position_embeddings "
                f"({self.max_sequence_length}); shorten the prompt or max_new_tokens"
            )
        output = self.hf_model(input_ids=input_ids, cache=state, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1, :], output.cache


def build(config: ModelConfig) -> GPT2LanguageModel:
    return GPT2LanguageModel(with_vocab_size(config))


# --- Hugging Face interop ----------------------------------------------------------------------


def is_transformers_gpt2(directory: str | os.PathLike[str]) -> bool:
    return (read_transformers_config(directory) or {}).get("model_type") == "gpt2"


def _fields_of(hf: transformers.GPT2Config) -> dict[str, Any]:
    """Foundry fields for a transformers GPT-2 config; settings GPT-2 here cannot express are refused."""
    unsupported = {
        "add_cross_attention": False,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "scale_attn_weights": True,
    }
    different = [f"{key}={getattr(hf, key)!r}" for key, usual in unsupported.items() if getattr(hf, key, usual) != usual]
    if different:
        raise FoundryError(f"cannot import this GPT-2: the Model Foundry gpt2 has no equivalent of {', '.join(different)}")
    return {
        "vocab_size": hf.vocab_size,
        "tie_word_embeddings": hf.tie_word_embeddings,
        "transformer": {
            "layers": hf.n_layer,
            "hidden_size": hf.n_embd,
            "attention_heads": hf.n_head,
            "intermediate_hidden_size": hf.n_inner or 4 * hf.n_embd,
            "activation_function": hf.activation_function,
            "dropout": hf.resid_pdrop,
            "attention_dropout": hf.attn_pdrop,
            "max_position_embeddings": hf.n_positions,
            "layer_norm_eps": hf.layer_norm_epsilon,
            "initializer_range": hf.initializer_range,
        },
    }


def from_transformers(directory: str | os.PathLike[str]) -> GPT2LanguageModel:
    """Import a transformers GPT-2 directory (``config.json`` with ``model_type: gpt2``)."""
    return import_transformers(directory, "gpt2", transformers.GPT2LMHeadModel, _fields_of)


def to_transformers(model: GPT2LanguageModel, directory: str, tokenizer: Any = None) -> None:
    """Write a directory that ``transformers.AutoModelForCausalLM.from_pretrained`` loads."""
    export_transformers(model, directory, tokenizer)
