"""BERT's model: the core's transformers adapter around ``BertForMaskedLM``, plus what BERT adds
to it: segment (token type) ids, checked against ``bert.type_vocab_size``, and a pooled vector
per sequence. The field mapping and the hooks are in :mod:`foundry_plugin_bert.plugin`.
"""

from __future__ import annotations

from typing import Any

import torch

from model_foundry.plugin import FoundryError, ModelOutput, TransformersLanguageModel


class BertLanguageModel(TransformersLanguageModel):
    """A BERT masked language model; ``hf_model`` is the wrapped ``BertForMaskedLM``."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **options: Any,
    ) -> ModelOutput:
        """The adapter's forward, with the segment of every token (``None``: all segment 0)."""
        self._check_token_types(token_type_ids)
        return super().forward(input_ids, attention_mask, labels, token_type_ids=token_type_ids, **options)

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
