"""Checks that need the registry or span sections: tokenizer kinds, objectives, modalities."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import attrs

from model_foundry.config.structuring import Structurer
from model_foundry.errors import did_you_mean, one_of
from model_foundry.registry import Architecture, Registry, find_architecture, unique_entry

if TYPE_CHECKING:
    from model_foundry.config.sections import DataSection, ModelConfig

# The dataset kind of a ``data`` section without one.
DEFAULT_DATA_KIND = "text"


def check_choices(structurer: Structurer, values: Mapping[str, Any], registry: Registry) -> None:
    """Checks that need the registry or span sections: modalities, tokenizer kinds, objectives."""
    tokenizer, training, model = values.get("tokenizer"), values.get("training"), values.get("model")
    _check_modality(structurer, values, registry)
    if tokenizer is not None and tokenizer.path is None and tokenizer.tokenizer_type not in registry.tokenizers:
        hint = did_you_mean(tokenizer.tokenizer_type, registry.tokenizers)
        structurer.problem(
            ("tokenizer", "tokenizer_type"),
            f"unknown tokenizer type {tokenizer.tokenizer_type!r}{hint}; available: {one_of(registry.tokenizers)}",
        )
    if training is not None and training.objective is not None and training.objective not in registry.collators:
        hint = did_you_mean(training.objective, registry.collators)
        structurer.problem(
            ("training", "objective"), f"unknown objective {training.objective!r}{hint}; available: {one_of(registry.collators)}"
        )
    elif training is not None and training.objective is not None and model is not None:
        allowed = objectives_of(model, registry)
        if allowed and training.objective not in allowed:
            found = find_architecture(model.architecture, registry)
            general = found.schema.capabilities.objectives if isinstance(found, Architecture) else ()
            arch, objective, supported = model.architecture, training.objective, ", ".join(allowed)
            message = (
                f"{arch} cannot train {objective!r} with these settings, only {supported}; "
                f"other {arch} settings can (see `foundry info {arch}`)"
                if objective in general
                else f"{arch} cannot train {objective!r}; it supports: {supported}"
            )
            structurer.problem(("training", "objective"), message)


def data_modality(data: DataSection, registry: Registry) -> str:
    """The modality of a ``data`` section: its own ``modality`` field for kinds that hold several
    (``npy``), else its dataset kind's."""
    if "modality" in attrs.fields_dict(type(data.params)):
        return data.params.modality
    spec = unique_entry(registry.datasets, data.kind, "dataset kind")
    return DEFAULT_DATA_KIND if isinstance(spec, str) else spec.modality


def _check_modality(structurer: Structurer, values: Mapping[str, Any], registry: Registry) -> None:
    """A tokenizer belongs to text; the data's modality must be one the architecture models."""
    data, model = values.get("data"), values.get("model")
    modality = data_modality(data, registry) if data is not None else None
    if values.get("tokenizer") is not None and modality not in (None, "text"):
        structurer.problem(
            ("tokenizer",), f"a tokenizer belongs to text, and data.kind {data.kind!r} is {modality} data; "
            "remove the 'tokenizer' section", key=True,
        )
    if model is None or modality is None:
        return
    found = find_architecture(model.architecture, registry)
    supported = found.schema.capabilities.supported_modalities if isinstance(found, Architecture) else (modality,)
    if modality not in supported:
        kinds = sorted(name for name, entries in registry.datasets.items() if entries[0][0].modality in supported)
        structurer.problem(
            ("data", "kind"), f"{model.architecture} models {', '.join(supported)} data, and data.kind {data.kind!r} "
            f"is {modality}; use a dataset kind of its modality ({one_of(kinds)})",
        )


def objectives_of(model: ModelConfig, registry: Registry) -> tuple[str, ...]:
    """The objectives a model config can train (the config may narrow its schema's list)."""
    narrowed = getattr(model.params, "objectives", None)
    if callable(narrowed):
        return tuple(narrowed())
    found = find_architecture(model.architecture, registry)
    return found.schema.capabilities.objectives if isinstance(found, Architecture) else ()
