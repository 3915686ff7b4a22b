"""An architecture whose network is a transformers model, described by a field mapping.

A plugin that wraps a transformers language model (GPT-2, BERT, ...) declares one
:class:`TransformersArchitecture` and names it as its entry point; the object answers the
plugin hooks itself: the config schema, the builder, the checkpoint converter that imports a
transformers directory, and the ``hf`` exporter. What differs from one such architecture to
the next is data: the transformers class, and which transformers config field each Foundry
field is. No torch here: the model side is :mod:`model_foundry.text.hf`, imported when a
model is first built, imported or exported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, CheckpointConverter, Exporter, ModelBuilder

# What the objective of a transformers head says about it: its loss, whether it generates, and
# the Auto class that loads an exported directory.
AUTO_CLASSES = {"causal_lm": "AutoModelForCausalLM", "masked_lm": "AutoModelForMaskedLM"}


@attrs.frozen
class TransformersArchitecture:
    """A Foundry architecture backed by ``transformers.<hf_model>``.

    ``fields`` maps a Foundry config field (a dotted path: ``transformer.layers``) to the
    transformers config field(s) holding the same value (``"n_layer"``, or a tuple when one
    Foundry field sets several). A null ``transformer.intermediate_hidden_size`` is exported as
    its resolved width, and a null ``transformer.layer_norm_eps`` leaves the transformers
    default. ``requires`` lists transformers settings the Foundry architecture has no field
    for, with the value it always has (the transformers default): an import refuses a
    directory with another value. ``model``
    names the Foundry model class (a :class:`~model_foundry.text.hf.TransformersLanguageModel`,
    or a subclass adding the architecture's own methods).
    """

    name: str
    config_class: type
    hf_model: str
    objective: Literal["causal_lm", "masked_lm"]
    fields: Mapping[str, str | tuple[str, ...]]
    family: str = ""
    description: str = ""
    presets: Mapping[str, Any] = attrs.field(factory=dict)
    requires: Mapping[str, Any] = attrs.field(factory=dict)
    model: str = "model_foundry.text.hf:TransformersLanguageModel"

    @property
    def supports_generation(self) -> bool:
        return self.objective == "causal_lm"

    # -- the hooks: this object is the plugin ------------------------------------------------------
    @hookimpl
    def foundry_config_schemas(self) -> list[ArchitectureSchema]:
        capabilities = Capabilities(objectives=(self.objective,), supports_generation=self.supports_generation)
        return [ArchitectureSchema(self.name, self.config_class, self.family, self.description, self.presets, capabilities)]

    @hookimpl
    def foundry_model_builders(self) -> list[ModelBuilder]:
        return [ModelBuilder(self.name, self.build)]

    @hookimpl
    def foundry_checkpoint_converters(self) -> list[CheckpointConverter]:
        return [CheckpointConverter(f"transformers-{self.name}", self.name, self.detect, self.convert,
                                    f"a transformers directory whose config.json has model_type {self.name}")]

    @hookimpl
    def foundry_exporters(self) -> list[Exporter]:
        return [Exporter(self.name, "hf", self.export,
                         f"a transformers directory that {AUTO_CLASSES[self.objective]}.from_pretrained loads")]

    # -- what the hooks name (imported on first use) -----------------------------------------------
    def build(self, config: Any) -> Any:
        from model_foundry.text.hf import build_transformers_model

        return build_transformers_model(self, config)

    def detect(self, directory: str | os.PathLike[str]) -> bool:
        from model_foundry.text.hf import read_transformers_config

        return (read_transformers_config(directory) or {}).get("model_type") == self.name

    def convert(self, directory: str | os.PathLike[str]) -> Any:
        from model_foundry.text.hf import import_transformers

        return import_transformers(directory, self)

    def export(self, model: Any, directory: str, tokenizer: Any = None) -> None:
        from model_foundry.text.hf import export_transformers

        export_transformers(model, directory, tokenizer)

    # -- the field mapping, both ways --------------------------------------------------------------
    def transformers_fields(self, params: Any) -> dict[str, Any]:
        """The transformers config fields of the network that the Foundry ``params`` describe."""
        values: dict[str, Any] = {}
        for path, names in self.fields.items():
            value = _resolved(params, path)
            if value is not None:
                values.update(dict.fromkeys(_as_tuple(names), value))
        return values

    def foundry_fields(self, hf_config: Any) -> dict[str, Any]:
        """The Foundry ``model`` fields (nested plain data) of a transformers config; settings that
        this architecture cannot express are a :class:`~model_foundry.errors.FoundryError`."""
        from model_foundry.errors import FoundryError

        different = [f"{key}={getattr(hf_config, key)!r}" for key, usual in self.requires.items()
                     if getattr(hf_config, key, usual) != usual]
        if different:
            raise FoundryError(f"cannot import this {self.name}: the Model Foundry {self.name} has no equivalent of "
                               f"{', '.join(different)}")
        fields: dict[str, Any] = {}
        for path, names in self.fields.items():
            *sections, key = path.split(".")
            section = fields
            for part in sections:
                section = section.setdefault(part, {})
            section[key] = getattr(hf_config, _as_tuple(names)[0])
        return fields


def _as_tuple(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else names


def _resolved(params: Any, path: str) -> Any:
    """The value of the Foundry field at ``path``; a null feed-forward width is its resolved default."""
    if path == "transformer.intermediate_hidden_size":
        return params.transformer.feed_forward_size
    value = params
    for part in path.split("."):
        value = getattr(value, part)
    return value
