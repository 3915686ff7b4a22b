"""The core's data collators: lists of token ids in, padded tensors with labels out.

A collator is called with a list of examples, each ``{"input_ids": [...]}`` (a list of ints or a
1-D tensor; other keys are ignored), and returns ``input_ids``, ``attention_mask`` (1 on tokens,
0 on padding) and ``labels`` (-100 wherever there is no loss), ready for ``model(**batch)``.
Sequences are right-padded to the longest one in the batch, rounded up to ``pad_to_multiple_of``.
Everything after padding is whole-batch tensor arithmetic: no Python loop over tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from model_foundry.errors import FoundryError

IGNORE_INDEX = -100
# BERT's split of the selected tokens: 80% become the mask token, 10% a random token, 10% stay.
MASK_SHARE = 0.8
RANDOM_SHARE = 0.1

Example = Mapping[str, Any] | Sequence[int] | torch.Tensor


def pad_batch(
    examples: Sequence[Example], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad the examples' ``input_ids``: ``(input_ids, attention_mask)``, both ``(batch, width)`` longs."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    sequences = [example["input_ids"] if isinstance(example, Mapping) else example for example in examples]
    lengths = [len(sequence) for sequence in sequences]
    width = max(lengths)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    if any(isinstance(sequence, torch.Tensor) for sequence in sequences):
        input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
        for row, sequence, length in zip(input_ids, sequences, lengths, strict=True):
            row[:length] = torch.as_tensor(sequence)
    else:
        # One torch.tensor call on padded lists beats filling rows one by one.
        rows = [list(sequence) + [pad_token_id] * (width - len(sequence)) for sequence in sequences]
        input_ids = torch.tensor(rows, dtype=torch.long).reshape(len(sequences), width)
    attention_mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    return input_ids, attention_mask


class CausalLMCollator:
    """Padding for next-token prediction: ``labels`` are the input ids, -100 on padding (the model shifts)."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None):
        self.pad_token_id = _pad_token_id(tokenizer)
        self.pad_to_multiple_of = _check_multiple(pad_to_multiple_of)

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_batch(examples, self.pad_token_id, self.pad_to_multiple_of)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class MaskedLMCollator:
    """BERT masking: each ordinary token is selected with ``mlm_probability``; of those, 80% become the
    mask token, 10% a random non-special token, 10% stay. ``labels`` hold the original id at selected
    positions and -100 elsewhere; special tokens and padding are never selected.

    ``generator`` (a ``torch.Generator`` or an int seed) makes the masking reproducible; without it
    the global torch RNG is used. The generator is kept as ``self.generator`` so a training loop can
    save and restore its state.
    """

    def __init__(
        self,
        tokenizer: Any,
        mlm_probability: float = 0.15,
        pad_to_multiple_of: int | None = None,
        generator: torch.Generator | int | None = None,
    ):
        if tokenizer.mask_token_id is None:
            raise FoundryError(
                f"the masked_lm objective needs a mask token and tokenizer {_name(tokenizer)} has none: set "
                "tokenizer.special_tokens.mask_token, or use a tokenizer.tokenizer_type of the core (bpe, "
                "wordpiece, unigram, char), which always defines one"
            )
        if not 0 < mlm_probability <= 1:
            raise FoundryError(f"mlm_probability must be in (0, 1], got {mlm_probability}")
        self.mlm_probability = mlm_probability
        self.pad_token_id = _pad_token_id(tokenizer)
        self.pad_to_multiple_of = _check_multiple(pad_to_multiple_of)
        self.mask_token_id = tokenizer.mask_token_id
        self.is_special = torch.zeros(len(tokenizer), dtype=torch.bool)
        self.is_special[sorted(set(tokenizer.all_special_ids))] = True
        self.random_token_ids = (~self.is_special).nonzero().squeeze(1)
        if len(self.random_token_ids) == 0:
            raise FoundryError(f"tokenizer {_name(tokenizer)} has only special tokens; masked_lm needs others too")
        self.generator = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_batch(examples, self.pad_token_id, self.pad_to_multiple_of)
        selectable = attention_mask.bool() & ~self.is_special[input_ids]
        selection_draw, action_draw = torch.rand((2, *input_ids.shape), generator=self.generator)
        selected = selectable & (selection_draw < self.mlm_probability)
        labels = torch.where(selected, input_ids, IGNORE_INDEX)
        masked = selected & (action_draw < MASK_SHARE)
        randomized = selected & (action_draw >= 1 - RANDOM_SHARE)
        input_ids = input_ids.masked_fill(masked, self.mask_token_id)
        picks = torch.randint(len(self.random_token_ids), (int(randomized.sum()),), generator=self.generator)
        input_ids[randomized] = self.random_token_ids[picks]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _name(tokenizer: Any) -> str:
    return repr(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def _pad_token_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is None:
        raise FoundryError(
            f"tokenizer {_name(tokenizer)} has no pad token, which batching needs: set "
            "tokenizer.special_tokens.pad_token (the core's tokenizer types always define one)"
        )
    return tokenizer.pad_token_id


def _check_multiple(pad_to_multiple_of: int | None) -> int | None:
    if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
        raise FoundryError(f"pad_to_multiple_of must be a positive integer or None, not {pad_to_multiple_of!r}")
    return pad_to_multiple_of
