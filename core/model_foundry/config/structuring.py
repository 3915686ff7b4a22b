"""Structuring: located plain data into attrs config instances, with every problem located.

:class:`Structurer` walks the data along the config class's type hints and collects a
:class:`~model_foundry.errors.Problem` for each thing wrong (``FILE:LINE:COL: key.path:
message``), so that a file's problems are all reported at once. Per class it reports unknown
keys (with a did-you-mean), missing keys and values of the wrong type, runs each field's
validators one by one, and builds the instance even when some values are out of range so that
the class's cross-field ``validate()`` is reported in the same pass.
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from typing import Any, Literal, Mapping

import attrs

from model_foundry.config.yaml import Located, Path, dotted
from model_foundry.errors import Problem, did_you_mean, one_of
from model_foundry.fields import describe, field_types, nested_class


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
        if origin in (list, tuple, typing.Sequence, collections.abc.Sequence):
            if not isinstance(value, list):
                self.problem(path, f"expected a list, got {_show(value)}; write [a, b] (on the command line: "
                             f"--set {dotted(path)}='[a, b]')")
                return attrs.NOTHING
            args = typing.get_args(kind) or (Any,)
            items = [self.structure(v, args[0], path + (i,)) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin in (dict, typing.Mapping, collections.abc.Mapping):
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


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


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
        nested = nested_class(hints[target]) if target in hints else None
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
