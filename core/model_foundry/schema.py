"""Typed config classes: fields with docs and validators, located structuring, JSON Schema.

Config classes are plain attrs classes. Declare fields with :func:`option` to give them a
doc string (shown by ``foundry info`` and in the JSON Schema) and validators from this
module, whose messages are written for users::

    @attrs.frozen
    class TransformerConfig:
        layers: int = option(12, doc="number of blocks", validator=positive)

A class may also define ``validate(self)`` yielding ``(relative.key, message)`` pairs for
checks that involve several fields; each is reported on the line of the key it names.
"""

from __future__ import annotations

import enum
import functools
import math
import sys
import types
import typing
from typing import Any, Callable, Iterator, Literal, Mapping

import attrs

from model_foundry.errors import Location, Problem, did_you_mean, one_of

DOC = "foundry_doc"
Path = tuple[str | int, ...]


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


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@attrs.define
class Located:
    """Plain data (dicts, lists, scalars) with the location of every key and value in it."""

    data: Any
    values: dict[Path, Location] = attrs.field(factory=dict)
    keys: dict[Path, Location] = attrs.field(factory=dict)

    def where(self, path: Path, key: bool = False) -> Location | None:
        """The location of ``path`` (its key if ``key``), else of its nearest located parent."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        while path:
            path = path[:-1]
            if path in self.values:
                return self.values[path]
        return None


@attrs.define
class Structurer:
    """Turns located plain data into attrs instances, collecting every problem on the way."""

    source: Located
    problems: list[Problem] = attrs.field(factory=list)

    def problem(self, path: Path, message: str, key: bool = False) -> None:
        self.problems.append(Problem(message, dotted(path), self.source.where(path, key)))

    def structure(self, value: Any, kind: Any, path: Path) -> Any:
        origin = typing.get_origin(kind)
        if kind is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(kind) if a is not type(None)]
            if value is None:
                if len(options) != len(typing.get_args(kind)):
                    return None
                self.problem(path, f"must not be null; expected {describe(kind)}")
                return attrs.NOTHING
            if len(options) == 1:
                return self.structure(value, options[0], path)
            for option_kind in options:  # first that fits without problems
                trial = Structurer(self.source)
                result = trial.structure(value, option_kind, path)
                if not trial.problems:
                    return result
            self.problem(path, f"expected {describe(kind)}, got {_show(value)}")
            return attrs.NOTHING
        if value is None:
            self.problem(path, f"must not be null; expected {describe(kind)}")
            return attrs.NOTHING
        if origin is Literal:
            choices = typing.get_args(kind)
            if value in choices and type(value) is type(choices[choices.index(value)]):
                return value
            hint = did_you_mean(str(value), [str(c) for c in choices])
            self.problem(path, f"{value!r} is not one of: {', '.join(map(str, choices))}{hint}")
            return attrs.NOTHING
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            members = {m.value: m for m in kind}
            if value in members:
                return members[value]
            hint = did_you_mean(str(value), [str(v) for v in members])
            self.problem(path, f"{value!r} is not one of: {', '.join(map(str, members))}{hint}")
            return attrs.NOTHING
        if origin in (list, tuple, typing.Sequence, _abc_sequence()):
            if not isinstance(value, list):
                self.problem(path, f"expected a list, got {_show(value)}; write [a, b] (on the command line: "
                             f"--set {dotted(path)}='[a, b]')")
                return attrs.NOTHING
            args = typing.get_args(kind) or (Any,)
            items = [self.structure(v, args[0], path + (i,)) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin in (dict, typing.Mapping, _abc_mapping()):
            if not isinstance(value, dict):
                self.problem(path, f"expected a mapping, got {_show(value)}")
                return attrs.NOTHING
            _, value_kind = typing.get_args(kind) or (str, Any)
            return {str(k): self.structure(v, value_kind, path + (k,)) for k, v in value.items()}
        if attrs.has(kind):
            return self.structure_class(value, kind, path)
        return self.structure_scalar(value, kind, path)

    def structure_scalar(self, value: Any, kind: Any, path: Path) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):  # YAML 1.2 reads "1e-4" as a string
                try:
                    return float(value)
                except ValueError:
                    pass
        elif kind is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
        else:
            return value
        self.problem(path, f"expected {describe(kind)}, got {_show(value)}")
        return attrs.NOTHING

    def structure_class(self, value: Any, cls: type, path: Path) -> Any:
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping of {cls.__name__} fields, got {_show(value)}")
            return attrs.NOTHING
        fields = {f.name: f for f in attrs.fields(cls) if f.init}
        hints = field_types(cls)
        before = len(self.problems)
        for key in value:
            if key not in fields:
                hint = did_you_mean(str(key), fields)
                self.problem(path + (key,), f"unknown key {key!r}{hint or f'; valid keys: {one_of(fields)}'}", key=True)
        kwargs: dict[str, Any] = {}
        missing = False
        for name, field in fields.items():
            if name in value:
                kwargs[name] = self.structure(value[name], hints[name], path + (name,))
            elif field.default is attrs.NOTHING:
                self.problem(path, f"missing required key {name!r} ({describe(hints[name])})", key=True)
                missing = True
        for name, value in kwargs.items():
            field = fields[name]
            if field.validator is None or value is attrs.NOTHING:
                continue
            try:  # validators see one value at a time so that every bad field is reported
                field.validator(None, field, value)
            except (ValueError, TypeError) as exc:
                self.problem(path + (name,), _validator_message(exc))
        if missing or any(value is attrs.NOTHING for value in kwargs.values()):
            return attrs.NOTHING  # no instance to check further
        # Every value has its type: the instance is built even when some are out of range or a key is
        # unknown, so that its cross-field checks (and the sections' checks after it) are reported in
        # the same pass; structure() raises for all the problems at the end.
        with attrs.validators.disabled():
            instance = cls(**kwargs)
        validate = getattr(instance, "validate", None)
        if callable(validate):
            clean = len(self.problems) == before
            try:
                for relative, message in validate() or ():
                    relative_path = tuple(relative.split(".")) if relative else ()
                    self.problem(path + relative_path, message)
            except Exception:
                if clean:  # a check that fails on valid values is a bug in it
                    raise
                # on values already reported as wrong, a cross-field check may fail: those reports stand
        return instance


def _validator_message(exc: Exception) -> str:
    text = str(exc)
    if text.startswith("'") and "' must be" in text:  # attrs' own validators: "'x' must be in ..."
        text = text.split("' ", 1)[1]
    return text


def _abc_sequence() -> Any:
    import collections.abc

    return collections.abc.Sequence


def _abc_mapping() -> Any:
    import collections.abc

    return collections.abc.Mapping


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of an attrs class (string annotations included)."""
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, globalns=vars(module) if module else None)


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
    """Config instances back to plain YAML-able data (through cattrs)."""
    from model_foundry.converter import converter

    return converter.unstructure(value)


def iter_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any, Any, str]]:
    """``(dotted.name, type, default, doc)`` for every leaf field of a config class."""
    hints = field_types(cls)
    for field in attrs.fields(cls):
        kind = hints[field.name]
        name = f"{prefix}{field.name}"
        nested = _nested_class(kind)
        if nested is not None:
            yield name, kind, {}, field.metadata.get(DOC, "")  # a block: its fields follow
            yield from iter_fields(nested, name + ".")
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        yield name, kind, default, field.metadata.get(DOC, "")


def _nested_class(kind: Any) -> type | None:
    if attrs.has(kind):
        return kind
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if attrs.has(a)]
        return inner[0] if len(inner) == 1 else None
    return None


def json_schema(kind: Any) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a config type."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_schema(a) for a in typing.get_args(kind)]}
    if kind is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(typing.get_args(kind))}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"enum": [m.value for m in kind]}
    if origin in (list, tuple):
        return {"type": "array", "items": json_schema((typing.get_args(kind) or (Any,))[0])}
    if origin in (dict, typing.Mapping):
        args = typing.get_args(kind)
        return {"type": "object", "additionalProperties": json_schema(args[1]) if args else {}}
    if attrs.has(kind):
        return class_schema(kind)
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": simple[kind]} if kind in simple else {}


def class_schema(cls: type, require: bool = True) -> dict[str, Any]:
    hints = field_types(cls)
    properties: dict[str, Any] = {}
    required = []
    for field in attrs.fields(cls):
        prop = json_schema(hints[field.name])
        if field.metadata.get(DOC):
            prop["description"] = field.metadata[DOC]
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if default is attrs.NOTHING:
            required.append(field.name)
        elif not attrs.has(type(default)):
            prop["default"] = unstructure(default)
        properties[field.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = cls.__doc__.strip().split("\n\n")[0]
    if required and require:
        schema["required"] = required
    return schema


def global_defaults(cls: type) -> tuple[str, tuple[str, ...]] | None:
    """The ``(block, targets)`` a class opted into with ``__foundry_global_defaults__``."""
    spec = getattr(cls, "__foundry_global_defaults__", None)
    return (spec[0], tuple(spec[1])) if spec else None


def apply_global_defaults(cls: type, source: Located, path: Path, structurer: Structurer) -> None:
    """Copy ``global_config`` fields into the sub-blocks that do not set them, then drop it."""
    spec = global_defaults(cls)
    section = _get(source.data, path)
    if spec is None or not isinstance(section, dict):
        return
    block, targets = spec
    if block not in section:
        return
    shared = section.pop(block)
    if not isinstance(shared, dict):
        structurer.problem(path + (block,), f"expected a mapping of defaults, got {_show(shared)}")
        return
    hints = field_types(cls)
    target_fields: dict[str, set[str]] = {}
    for target in targets:
        nested = _nested_class(hints[target]) if target in hints else None
        target_fields[target] = {f.name for f in attrs.fields(nested)} if nested else set()
    known = set().union(*target_fields.values())
    for key in shared:
        if key not in known:
            hint = did_you_mean(str(key), known) or f"; it may set: {one_of(known)}"
            structurer.problem(path + (block, key), f"unknown key {key!r}{hint}", key=True)
    for target in targets:
        sub = section.get(target)
        if not isinstance(sub, dict):
            continue
        for key, value in shared.items():
            if key in target_fields[target] and key not in sub:
                sub[key] = value
                for table in (source.values, source.keys):
                    if path + (block, key) in table:
                        table[path + (target, key)] = table[path + (block, key)]


def _get(data: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(data, (dict, list)):
            return None
        try:
            data = data[part]
        except (KeyError, IndexError):
            return None
    return data


def check_mapping_keys(
    structurer: Structurer, data: Mapping[str, Any], allowed: Mapping[str, Any] | set[str], path: Path, what: str
) -> None:
    """Report keys of ``data`` that are not in ``allowed``, with a suggestion."""
    for key in data:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed) or f"; valid {what}s: {one_of(allowed)}"
            structurer.problem(path + (key,), f"unknown {what} {key!r}{hint}", key=True)
