"""Config fields: how a config class declares its fields, and how the core reads them back.

Config classes are plain attrs classes. Declare fields with :func:`option` to give them a
doc string (shown by ``foundry info`` and in the JSON Schema) and validators from this
module, whose messages are written for users::

    @attrs.frozen
    class TransformerConfig:
        layers: int = option(12, doc="number of blocks", validator=positive)

A class may also define ``validate(self)`` yielding ``(relative.key, message)`` pairs for
checks that involve several fields; each is reported on the line of the key it names
(:mod:`model_foundry.config.structuring` runs both).
"""

from __future__ import annotations

import enum
import functools
import math
import types
import typing
from typing import Any, Callable, Iterator, Literal

import attrs

DOC = "foundry_doc"


def option(default: Any = attrs.NOTHING, *, doc: str = "", validator: Any = None, factory: Any = None) -> Any:
    """An attrs field with a user-facing ``doc`` and validators.

    ``factory`` gives a fresh mutable default (a list or dict) for each instance.
    """
    if factory is not None:
        default = attrs.Factory(factory)
    return attrs.field(default=default, validator=validator, metadata={DOC: doc})


def _check(predicate: Callable[[Any], bool], message: str) -> Callable[[Any, Any, Any], None]:
    def validator(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is not None and not predicate(value):
            raise ValueError(f"{message}, got {value!r}")

    return validator


positive = _check(lambda v: v > 0, "must be > 0")
non_negative = _check(lambda v: v >= 0, "must be >= 0")
probability = _check(lambda v: 0 <= v < 1, "must be in [0, 1)")
unit_interval = _check(lambda v: 0 <= v <= 1, "must be in [0, 1]")
finite = _check(math.isfinite, "must be a finite number")


def in_range(low: float, high: float) -> Callable[[Any, Any, Any], None]:
    return _check(lambda v: low <= v <= high, f"must be between {low} and {high}")


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of an attrs class (string annotations included), each field's in the
    namespace of the module that declares it (a subclass inherits fields from another module)."""
    return typing.get_type_hints(cls)


def describe(kind: Any) -> str:
    """A short, human description of a type: ``an integer``, ``one of: a, b``..."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        parts = [describe(a) for a in typing.get_args(kind) if a is not type(None)]
        return " or ".join(parts)
    if origin is Literal:
        return "one of: " + ", ".join(map(str, typing.get_args(kind)))
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of: " + ", ".join(str(m.value) for m in kind)
    if origin in (list, tuple):
        return f"a list of {describe((typing.get_args(kind) or (Any,))[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin in (dict, typing.Mapping):
        return "a mapping"
    if attrs.has(kind):
        return f"a mapping ({kind.__name__})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def type_name(kind: Any) -> str:
    """A compact type name for tables: ``int``, ``float | None``, ``gelu | relu``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(kind))
    if origin is Literal:
        return " | ".join(map(str, typing.get_args(kind)))
    if origin in (list, tuple):
        return f"list[{type_name((typing.get_args(kind) or (Any,))[0])}]"
    if origin in (dict, typing.Mapping):
        return "mapping"
    if kind is type(None):
        return "None"
    return getattr(kind, "__name__", str(kind))


def unstructure(value: Any) -> Any:
    """Config instances back to plain YAML-able data (config.yaml, JSON)."""
    return _converter().unstructure(value)


@functools.cache
def _converter() -> Any:
    import cattrs  # imported when a config is written out, so that `foundry list` does not pay for it

    converter = cattrs.Converter()
    converter.register_unstructure_hook(enum.Enum, lambda member: member.value)
    return converter


def iter_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, Any, str]]:
    """``(dotted.name, type, default, doc)`` for every leaf field of a config class."""
    hints = field_types(cls)
    for field in attrs.fields(cls):
        kind = hints[field.name]
        name = f"{prefix}{field.name}"
        nested = nested_class(kind)
        if nested is not None:
            yield name, kind, {}, field.metadata.get(DOC, "")  # a block: its fields follow
            yield from iter_fields(nested, name + ".")
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        yield name, kind, default, field.metadata.get(DOC, "")


def nested_class(kind: Any) -> type | None:
    """The attrs class a field of type ``kind`` holds (``Block`` or ``Block | None``), else None."""
    if attrs.has(kind):
        return kind
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if attrs.has(a)]
        return inner[0] if len(inner) == 1 else None
    return None
