"""The model side of :class:`~model_foundry.text.hf_architecture.TransformersArchitecture`.

:class:`TransformersLanguageModel` adapts a ``PreTrainedModel`` (held as ``hf_model``) to the
:class:`~model_foundry.text.modeling.LanguageModel` interface; :func:`build_transformers_model`,
:func:`import_transformers` and :func:`export_transformers` are what the architecture's builder,
checkpoint converter and ``hf`` exporter run.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from model_foundry.config import ModelConfig, load_model_config
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.text.hf_architecture import TransformersArchitecture
from model_foundry.text.modeling import LanguageModel, ModelOutput, causal_lm_loss, masked_lm_loss, with_vocab_size

TRANSFORMERS_CONFIG = "config.json"
SPECIAL_TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
OBJECTIVE_LOSSES = {"causal_lm": causal_lm_loss, "masked_lm": masked_lm_loss}


def build_transformers_model(architecture: TransformersArchitecture, config: ModelConfig) -> TransformersLanguageModel:
    """The builder of a transformers-backed architecture: its model class around a fresh network."""
    from model_foundry.records import resolve

    return resolve(architecture.model)(with_vocab_size(config), architecture)


class TransformersLanguageModel(LanguageModel):
    """A language model around ``hf_model``, the ``transformers.<architecture.hf_model>`` network
    that ``config`` describes through the architecture's field mapping.

    The loss is the core's loss of the architecture's objective, so every architecture training
    an objective computes it alike. A causal model generates on the transformers KV cache.
    """

    def __init__(self, config: ModelConfig, architecture: TransformersArchitecture):
        import transformers

        super().__init__(config)
        self.objective = architecture.objective
        hf_class = getattr(transformers, architecture.hf_model)
        # Token ids belong to the tokenizer (the export writes them from it); no padding row is reserved.
        hf_config = hf_class.config_class(
            vocab_size=config.vocab_size, **architecture.transformers_fields(config.params),
            **dict.fromkeys(SPECIAL_TOKEN_IDS),
        )
        self.hf_model = hf_class(hf_config)

    @property
    def supports_generation(self) -> bool:
        return self.objective == "causal_lm"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **inputs: Any,
    ) -> ModelOutput:
        """Logits for every position; with ``labels``, the objective's loss (-100 labels ignored).

        Further ``inputs`` (``position_ids``, ``token_type_ids``, ...) go to ``hf_model`` as they are.
        """
        with self._eager_attention(output_attentions):
            output = self.hf_model(
                input_ids=input_ids, attention_mask=attention_mask, **inputs,
                output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True,
            )
        return ModelOutput(
            loss=None if labels is None else OBJECTIVE_LOSSES[self.objective](output.logits, labels),
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

    def next_token_logits(self, input_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One generation step on the KV cache: only the new tokens go through the blocks."""
        seen = state.get_seq_length() if state is not None else 0
        if seen + input_ids.size(1) > self.max_sequence_length:
            raise FoundryError(
                f"{self.architecture} generation reached {seen + input_ids.size(1)} tokens, past "
                f"max_position_embeddings ({self.max_sequence_length}); shorten the prompt or max_new_tokens"
            )
        output = self.hf_model(input_ids=input_ids, cache=state, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1, :], output.cache

    def get_input_embeddings(self) -> nn.Module:
        return self.hf_model.get_input_embeddings()

    def resize_vocabulary_layers(self, new_num_tokens: int) -> None:
        # transformers resizes its own layers, its config's vocab_size (which the export writes) and the tie.
        self.hf_model.resize_token_embeddings(new_num_tokens)

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


def import_transformers(directory: str | os.PathLike[str], architecture: TransformersArchitecture) -> LanguageModel:
    """Build a Foundry model from a transformers directory, with the same weights.

    The Foundry model is built from the fields that describe the same network (the
    architecture's field mapping, read backwards), so saving and reloading it gives the same
    network again; settings the architecture cannot express are a :class:`FoundryError`.
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
    import transformers

    hf_class = getattr(transformers, architecture.hf_model)
    # use_safetensors=True: transformers would otherwise fall back to unpickling pytorch_model.bin.
    source = hf_class.from_pretrained(directory, dtype=torch.float32, use_safetensors=True)
    label = os.path.join(directory, TRANSFORMERS_CONFIG)
    fields = {"architecture": architecture.name, "vocab_size": source.config.vocab_size,
              **architecture.foundry_fields(source.config)}
    try:
        model_config = load_model_config(fields, label=label)
    except ConfigError as exc:
        raise FoundryError(
            f"cannot import {directory!r} as {architecture.name}: its config maps to an invalid one:\n{exc}"
        ) from None
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
