"""Shared pieces for plugins whose models wrap a Hugging Face transformers model.

:class:`TransformersLanguageModel` adapts a ``PreTrainedModel`` (held as ``hf_model``) to
the :class:`~model_foundry.text.modeling.LanguageModel` interface. :func:`import_transformers`
and :func:`export_transformers` are the bodies of a plugin's checkpoint converter and
``hf`` exporter: the plugin only says how its config maps onto the transformers config.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from model_foundry.config import ModelConfig, load_model_config
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.text.modeling import LanguageModel, ModelOutput

TRANSFORMERS_CONFIG = "config.json"
SPECIAL_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


class TransformersLanguageModel(LanguageModel):
    """A language model around ``hf_model``, a transformers model with an LM head.

    Subclasses build the transformers model from their config, pass it to ``__init__`` and
    set ``objective_loss`` (:func:`~model_foundry.text.modeling.causal_lm_loss` or
    :func:`~model_foundry.text.modeling.masked_lm_loss`); their ``forward`` calls :meth:`run`.
    The loss is the core's, so every architecture training an objective computes it alike.
    """

    objective_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __init__(self, config: ModelConfig, hf_model: nn.Module):
        super().__init__(config)
        self.hf_model = hf_model

    def run(
        self,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **inputs: Any,
    ) -> ModelOutput:
        """Call ``hf_model`` on ``inputs`` and wrap its output (with the loss when labels are given)."""
        with self._eager_attention(output_attentions):
            output = self.hf_model(
                **inputs, output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True
            )
        return ModelOutput(
            loss=None if labels is None else type(self).objective_loss(output.logits, labels),
            logits=output.logits,
            hidden_states=output.hidden_states if output_hidden_states else None,
            attentions=output.attentions if output_attentions else None,
        )

    @contextlib.contextmanager
    def _eager_attention(self, needed: bool) -> Iterator[None]:
        # Fused attention kernels never materialise the attention weights; only the eager path returns them.
        current = self.hf_model.config._attn_implementation
        if not needed or current == "eager":
            yield
            return
        self.hf_model.set_attn_implementation("eager")
        try:
            yield
        finally:
            self.hf_model.set_attn_implementation(current)

    def get_input_embeddings(self) -> nn.Module:
        return self.hf_model.get_input_embeddings()

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Module:
        """Resize the vocabulary (output layer included) and record it in ``config.vocab_size``."""
        embeddings = self.hf_model.resize_token_embeddings(new_num_tokens)
        self.config = self.config.evolve(vocab_size=new_num_tokens)
        return embeddings

    @property
    def max_sequence_length(self) -> int:
        return int(self.hf_model.config.max_position_embeddings)


def read_transformers_config(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` of a transformers model directory, or ``None`` when there is none."""
    path = os.path.join(directory, TRANSFORMERS_CONFIG)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def import_transformers(
    directory: str | os.PathLike[str],
    architecture: str,
    hf_class: Any,
    fields_of: Callable[[Any], dict[str, Any]],
) -> LanguageModel:
    """Build a Foundry model from a transformers directory, with the same weights.

    ``hf_class`` loads the directory (e.g. ``GPT2LMHeadModel``); ``fields_of(hf_config)``
    returns the Foundry ``model`` section fields that describe the same network (raising
    :class:`FoundryError` for settings the architecture cannot express). The Foundry model
    is built from those fields, so saving and reloading it gives the same network again.
    """
    from model_foundry.factory import create_model

    directory = os.fspath(directory)
    if not any(name.endswith(".safetensors") for name in os.listdir(directory)):
        pickles = sorted(name for name in os.listdir(directory) if name.endswith((".bin", ".pt", ".pth", ".ckpt")))
        held = f"only pickled weights ({', '.join(pickles)})" if pickles else "no weights"
        raise FoundryError(
            f"{directory!r} holds {held}; Model Foundry loads safetensors only and never unpickles a file (a pickle can "
            "run code). Convert it where you trust it: transformers' from_pretrained, then "
            "save_pretrained(directory) writes model.safetensors"
        )
    # use_safetensors=True: transformers would otherwise fall back to unpickling pytorch_model.bin.
    source = hf_class.from_pretrained(directory, dtype=torch.float32, use_safetensors=True)
    label = os.path.join(directory, TRANSFORMERS_CONFIG)
    try:
        model_config = load_model_config({"architecture": architecture, **fields_of(source.config)}, label=label)
    except ConfigError as exc:
        raise FoundryError(f"cannot import {directory!r} as {architecture}: its config maps to an invalid one:\n{exc}") from None
    model = create_model(model_config)
    model.hf_model.load_state_dict(source.state_dict())
    return model.eval()


def export_transformers(model: TransformersLanguageModel, directory: str, tokenizer: Any = None) -> None:
    """Write ``model.hf_model`` as a transformers directory (safetensors), with the tokenizer if given.

    The tokenizer's bos/eos/pad ids are recorded in ``config.json`` and
    ``generation_config.json`` so that transformers' ``generate`` and padding use them.
    """
    model.hf_model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is None:
        return
    ids = {name: getattr(tokenizer, name, None) for name in SPECIAL_TOKEN_IDS}
    ids = {name: value for name, value in ids.items() if value is not None}
    for file in (TRANSFORMERS_CONFIG, "generation_config.json"):
        path = os.path.join(directory, file)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            data.update(ids)
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
    tokenizer.save_pretrained(directory)
