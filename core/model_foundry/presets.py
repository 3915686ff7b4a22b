"""Presets: an architecture's named configs, written as typed functions that derive from one another.

A preset is a function with no arguments that returns an instance of the architecture's
config class; :class:`Presets` collects them by name, as fairseq2 registers its model
configs::

    PRESETS = Presets()

    @PRESETS.register("base")
    def base() -> GPT2Config:
        return GPT2Config(transformer=TransformerConfig(layers=12, hidden_size=768, attention_heads=12))

    @PRESETS.register("tiny")
    def tiny() -> GPT2Config:
        return attrs.evolve(base(), transformer=attrs.evolve(base().transformer, layers=2, hidden_size=64))

Because the config class checks its fields when the function runs, a misspelled field or a
value its validators refuse fails in a test that builds every preset (as
``tests/test_presets.py`` does for every installed plugin), not when a user loads the preset.

A config file's ``preset: NAME`` lays :func:`preset_fields` under the file's own fields: the
fields the preset sets, that is those that differ from the config class's defaults, as plain
data. Fields a preset leaves at their defaults are therefore still open to a
``global_config`` block, like fields the file does not name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

PresetFunction = TypeVar("PresetFunction", bound=Callable[[], Any])


class Presets(Mapping[str, Callable[[], Any]]):
    """An architecture's presets: preset name -> the function that returns its config object.

    It is the ``presets`` of an :class:`~model_foundry.records.ArchitectureSchema`; iterating
    gives the names in the order they were registered.
    """

    def __init__(self) -> None:
        self._functions: dict[str, Callable[[], Any]] = {}

    def register(self, name: str) -> Callable[[PresetFunction], PresetFunction]:
        """Decorator: register the function as the preset ``name`` (the function itself is unchanged)."""

        def add(function: PresetFunction) -> PresetFunction:
            if name in self._functions:
                raise ValueError(f"preset {name!r} is registered twice")
            self._functions[name] = function
            return function

        return add

    def __getitem__(self, name: str) -> Callable[[], Any]:
        return self._functions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)

    def __repr__(self) -> str:
        return f"Presets({', '.join(self._functions)})"


def preset_config(schema: Any, name: str) -> Any:
    """The config object of ``schema``'s preset ``name``: an instance of ``schema.config_class``,
    or a :class:`TypeError` naming the preset (a bug in its plugin)."""
    config = schema.presets[name]()
    if not isinstance(config, schema.config_class):
        raise TypeError(
            f"preset {name!r} of {schema.name} returned a {type(config).__name__}, not a "
            f"{schema.config_class.__name__}: a preset function returns the architecture's config object"
        )
    return config


def preset_fields(schema: Any, name: str) -> dict[str, Any]:
    """The fields ``schema``'s preset ``name`` sets, as plain data (nested sections as mappings)."""
    return changed_fields(preset_config(schema, name))


def changed_fields(config: Any) -> dict[str, Any]:
    """The fields of an attrs config object that differ from their defaults, as plain data.

    A nested config section is compared field by field with its own defaults; one that is
    present where the default is ``None`` (or that has no default) is kept, with its changed
    fields (possibly none). A field without a default is always kept.
    """
    from model_foundry.fields import unstructure

    changed: dict[str, Any] = {}
    for field in (f for f in attrs.fields(type(config)) if f.init):  # what a config file can set
        value = getattr(config, field.name)
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory(config) if default.takes_self else default.factory()
        if attrs.has(type(value)) and (default is None or default is attrs.NOTHING or type(default) is type(value)):
            nested = changed_fields(value)
            if nested or type(default) is not type(value):  # kept: a section the default does not have
                changed[field.name] = nested
        elif default is attrs.NOTHING or value != default:
            changed[field.name] = unstructure(value)
    return changed
