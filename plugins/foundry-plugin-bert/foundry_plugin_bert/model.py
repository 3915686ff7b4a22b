"""BERT: transformers' ``BertForMaskedLM`` behind the Model Foundry language-model interface.

Read top to bottom: the config mapping, the model (forward, pooled output), the builder,
then the Hugging Face converter and exporter. BERT attends in both directions, so it does
not generate text (``supports_generation = False``).
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
    export_transformers,
    import_transformers,
    masked_lm_loss,
    read_transformers_config,
    with_vocab_size,
)

BERT_LAYER_NORM_EPS = 1e-12


def transformers_config(config: ModelConfig) -> transformers.BertConfig:
    """The transformers config of the network a Foundry BERT config describes."""
    block = config.transformer
    return transformers.BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=block.hidden_size,
        num_hidden_layers=block.layers,
        num_attention_heads=block.attention_heads,
        intermediate_size=block.feed_forward_size,
        hidden_act=block.activation_function,
        hidden_dropout_prob=block.dropout,
        attention_probs_dropout_prob=block.attention_dropout,
        max_position_embeddings=block.max_position_embeddings,
        type_vocab_size=config.bert.type_vocab_size,
        layer_norm_eps=block.layer_norm_eps or BERT_LAYER_NORM_EPS,
        initializer_range=block.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        # Token ids belong to the tokenizer (the export writes them from it); no padding row is reserved.
        pad_token_id=None,
    )


class BertLanguageModel(TransformersLanguageModel):
    """A BERT masked language model; ``hf_model`` is the wrapped ``BertForMaskedLM``."""

    supports_generation = False
    objective_loss = staticmethod(masked_lm_loss)

    def __init__(self, config: ModelConfig):
        super().__init__(config, transformers.BertForMaskedLM(transformers_config(config)))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> ModelOutput:
        """Logits for every position; with ``labels``, the loss on positions whose label is not -100."""
        self._check_token_types(token_type_ids)
        return self.run(
            labels,
            output_hidden_states,
            output_attentions,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
        )

    def pooled_output(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One vector per sequence, ``(batch, hidden_size)``, chosen by ``bert.pooler_type``.

        ``first`` is the final state of the first token ([CLS]); ``mean`` averages the final
        states of the tokens that ``attention_mask`` keeps.
        """
        self._check_token_types(token_type_ids)
        states = self.hf_model.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
        ).last_hidden_state
        if self.config.bert.pooler_type == "first":
            return states[:, 0]
        if attention_mask is None:
            return states.mean(dim=1)
        weights = attention_mask.to(states.dtype).unsqueeze(-1)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def _check_token_types(self, token_type_ids: torch.Tensor | None) -> None:
        limit = self.config.bert.type_vocab_size
        if token_type_ids is not None and token_type_ids.numel() and int(token_type_ids.max()) >= limit:
            raise FoundryError(
                f"token_type_ids go up to {int(token_type_ids.max())}, but bert.type_vocab_size is {limit}"
            )


def build(config: ModelConfig) -> BertLanguageModel:
    return BertLanguageModel(with_vocab_size(config))


# --- Hugging Face interop ----------------------------------------------------------------------


def is_transformers_bert(directory: str | os.PathLike[str]) -> bool:
    return (read_transformers_config(directory) or {}).get("model_type") == "bert"


def _fields_of(hf: transformers.BertConfig) -> dict[str, Any]:
    """Foundry fields for a transformers BERT config; settings BERT here cannot express are refused."""
    different = [f"{key}=True" for key in ("is_decoder", "add_cross_attention") if getattr(hf, key, False)]
    position_type = getattr(hf, "position_embedding_type", "absolute")
    if position_type != "absolute":
        different.append(f"position_embedding_type={position_type!r}")
    if different:
        raise FoundryError(f"cannot import this BERT: the Model Foundry bert has no equivalent of {', '.join(different)}")
    return {
        "vocab_size": hf.vocab_size,
        "tie_word_embeddings": hf.tie_word_embeddings,
        "transformer": {
            "layers": hf.num_hidden_layers,
            "hidden_size": hf.hidden_size,
            "attention_heads": hf.num_attention_heads,
            "intermediate_hidden_size": hf.intermediate_size,
            "activation_function": hf.hidden_act,
            "dropout": hf.hidden_dropout_prob,
            "attention_dropout": hf.attention_probs_dropout_prob,
            "max_position_embeddings": hf.max_position_embeddings,
            "layer_norm_eps": hf.layer_norm_eps,
            "initializer_range": hf.initializer_range,
        },
        "bert": {"type_vocab_size": hf.type_vocab_size},
    }


def from_transformers(directory: str | os.PathLike[str]) -> BertLanguageModel:
    """Import a transformers BERT directory (``config.json`` with ``model_type: bert``)."""
    return import_transformers(directory, "bert", transformers.BertForMaskedLM, _fields_of)


def to_transformers(model: BertLanguageModel, directory: str, tokenizer: Any = None) -> None:
    """Write a directory that ``transformers.AutoModelForMaskedLM.from_pretrained`` loads."""
    export_transformers(model, directory, tokenizer)
