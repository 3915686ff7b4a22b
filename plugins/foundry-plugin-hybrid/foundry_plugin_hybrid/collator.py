"""The ``hybrid`` collator: one batch for both branches, made by the core's two collators."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from model_foundry.plugin import CausalLMCollator, MaskedLMCollator


class HybridCollator:
    """Causal ``input_ids``/``attention_mask``/``labels`` plus masked ``mlm_input_ids``/``mlm_labels``.

    The causal part is :class:`~model_foundry.text.collators.CausalLMCollator`'s output and the
    masked part :class:`~model_foundry.text.collators.MaskedLMCollator`'s (BERT masking of
    ``mlm_probability`` of the tokens), both from the same examples and padded alike, so
    the batch goes straight into ``HybridModel(**batch)``.
    """

    def __init__(
        self,
        tokenizer: Any,
        mlm_probability: float = 0.15,
        pad_to_multiple_of: Optional[int] = None,
        generator: torch.Generator | int | None = None,
    ):
        self.causal = CausalLMCollator(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self.masked = MaskedLMCollator(
            tokenizer, mlm_probability=mlm_probability, pad_to_multiple_of=pad_to_multiple_of, generator=generator
        )

    @property
    def generator(self) -> Optional[torch.Generator]:
        """The masking's random generator (the masked collator's), for saving and restoring its state."""
        return self.masked.generator

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self.causal(examples))
        masked = self.masked(examples)
        batch["mlm_input_ids"] = masked["input_ids"]
        batch["mlm_labels"] = masked["labels"]
        return batch
