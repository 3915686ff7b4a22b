"""Structuring: located plain data into attrs config instances, with every problem located.

:class:`Structurer` walks the data along the config class's type hints and collects a
:class:`~model_foundry.errors.Problem` for each thing wrong (``FILE:LINE:COL: key.path:
message``), so that a file's problems are all reported at once. Per class it reports unknown
keys (with a did-you-mean), missing keys and values of the wrong type, runs each field's
validators one by one, and builds the instance even when some values are out of range so that
the class's cross-field ``validate()`` is reported in the same pass.

Why not cattrs' structuring (cattrs writes configs back out, :func:`~model_foundry.fields.unstructure`):
its ``detailed_validation`` does collect type errors with key paths, but (1) on any error it
builds no instance, so the range checks and ``validate()`` of the same section would come one
run at a time (tests/test_config.py checks they come in one pass); (2) its defaults are lenient
where a config must not be (``int(3.7) == 3``, ``bool("false")`` is true, a string is a list of
characters), so every hook here would be replaced; (3) it reports a failing attrs validator for
the class, not for the field. What would be left of cattrs is its dispatch.
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from typing import Any, Callable, Literal, Mapping

import attrs

from model_foundry.config.yaml import Located, Path, dotted
from model_foundry.errors import Problem, did_you_mean, one_of
from model_foundry.fields import describe, field_types, nested_class

UNIONS = (typing.Union, types.UnionType)
SEQUENCES = (list, tuple, typing.Sequence, collections.abc.Sequence)
MAPPINGS = (dict, typing.Mapping, collections.abc.Mapping)


@attrs.define
class Structurer:
    """Turns located plain data into attrs instances, collecting every problem on the way.

    Each ``structure...`` method returns the structured value, or ``attrs.NOTHING`` after
    recording why there is none.
    """

    source: Located
    problems: list[Problem] = attrs.field(factory=list)

    def problem(self, path: Path, message: str, key: bool = False) -> None:
        self.problems.append(Problem(message, dotted(path), self.source.where(path, key)))

    def structure(self, value: Any, kind: Any, path: Path) -> Any:
        """``value`` as an instance of the type hint ``kind``."""
        origin = typing.get_origin(kind)
        if kind is Any:
            return value
        if origin in UNIONS:
            return self.structure_union(value, kind, path)
        if value is None:
            self.problem(path, f"must not be null; expected {describe(kind)}")
            return attrs.NOTHING
        if origin is Literal:
            return self.structure_choice(value, typing.get_args(kind), path)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            choice = self.structure_choice(value, tuple(member.value for member in kind), path)
            return attrs.NOTHING if choice is attrs.NOTHING else kind(choice)
        if origin in SEQUENCES:
            return self.structure_list(value, kind, path)
        if origin in MAPPINGS:
            return self.structure_mapping(value, kind, path)
        if attrs.has(kind):
            return self.structure_class(value, kind, path)
        return self.structure_scalar(value, kind, path)

    def structure_union(self, value: Any, kind: Any, path: Path) -> Any:
        """``X | None``, or the first of several types that fits without problems."""
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            if len(options) != len(typing.get_args(kind)):
                return None
            self.problem(path, f"must not be null; expected {describe(kind)}")
            return attrs.NOTHING
        if len(options) == 1:
            return self.structure(value, options[0], path)
        for option_kind in options:
            trial = Structurer(self.source)
            result = trial.structure(value, option_kind, path)
            if not trial.problems:
                return result
        self.problem(path, f"expected {describe(kind)}, got {_show(value)}")
        return attrs.NOTHING

    def structure_choice(self, value: Any, choices: tuple[Any, ...], path: Path) -> Any:
        """One of ``choices`` (a Literal's or an enum's values), of the same type: ``1`` is not ``true``."""
        if value in choices and type(value) is type(choices[choices.index(value)]):
            return value
        hint = did_you_mean(str(value), [str(c) for c in choices])
        self.problem(path, f"{value!r} is not one of: {', '.join(map(str, choices))}{hint}")
        return attrs.NOTHING

    def structure_list(self, value: Any, kind: Any, path: Path) -> Any:
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {_show(value)}; write [a, b] (on the command line: "
                         f"--set {dotted(path)}='[a, b]')")
            return attrs.NOTHING
        item_kind = (typing.get_args(kind) or (Any,))[0]
        items = [self.structure(item, item_kind, path + (i,)) for i, item in enumerate(value)]
        return tuple(items) if typing.get_origin(kind) is tuple else items

    def structure_mapping(self, value: Any, kind: Any, path: Path) -> Any:
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_show(value)}")
            return attrs.NOTHING
        _, value_kind = typing.get_args(kind) or (str, Any)
        return {str(k): self.structure(v, value_kind, path + (k,)) for k, v in value.items()}

    def structure_scalar(self, value: Any, kind: Any, path: Path) -> Any:
        coerce = COERCIONS.get(kind)
        if coerce is None:  # a type the walk does not know: taken as it is
            return value
        result = coerce(value)
        if result is attrs.NOTHING:
            self.problem(path, f"expected {describe(kind)}, got {_show(value)}")
        return result

    def structure_class(self, value: Any, cls: type, path: Path) -> Any:
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping of {cls.__name__} fields, got {_show(value)}")
            return attrs.NOTHING
        fields = {f.name: f for f in attrs.fields(cls) if f.init}
        hints = field_types(cls)
        before = len(self.problems)
        check_mapping_keys(self, value, fields, path, "key")
        kwargs: dict[str, Any] = {}
        missing = False
        for name, field in fields.items():
            if name in value:
                kwargs[name] = self.structure(value[name], hints[name], path + (name,))
            elif field.default is attrs.NOTHING:
                self.problem(path, f"missing required key {name!r} ({describe(hints[name])})", key=True)
                missing = True
        for name, field_value in kwargs.items():
            if field_value is not attrs.NOTHING:
                self.run_validator(fields[name], field_value, path + (name,))
        if missing or any(field_value is attrs.NOTHING for field_value in kwargs.values()):
            return attrs.NOTHING  # no instance to check further
        # Every value has its type: the instance is built even when some are out of range or a key is
        # unknown, so that its cross-field checks (and the sections' checks after it) are reported in
        # the same pass; structure() raises for all the problems at the end.
        with attrs.validators.disabled():
            instance = cls(**kwargs)
        self.run_cross_field_checks(instance, path, clean=len(self.problems) == before)
        return instance

    def run_validator(self, field: attrs.Attribute, value: Any, path: Path) -> None:
        """A field's validators, one field at a time, so that every bad field is reported."""
        if field.validator is None:
            return
        try:
            field.validator(None, field, value)
        except (ValueError, TypeError) as exc:
            self.problem(path, _validator_message(exc))

    def run_cross_field_checks(self, instance: Any, path: Path, clean: bool) -> None:
        """The class's ``validate()``: ``(relative.key, message)`` pairs, each reported at its key."""
        validate = getattr(instance, "validate", None)
        if not callable(validate):
            return
        try:
            for relative, message in validate() or ():
                self.problem(path + (tuple(relative.split(".")) if relative else ()), message)
        except Exception:
            if clean:  # a check that fails on valid values is a bug in it
                raise
            # on values already reported as wrong, a cross-field check may fail: those reports stand


def _to_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else attrs.NOTHING


def _to_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return attrs.NOTHING


def _to_float(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.2 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    return attrs.NOTHING


def _to_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return attrs.NOTHING


# How a plain YAML scalar becomes each scalar type, or NOTHING where it cannot without guessing.
COERCIONS: dict[type, Callable[[Any], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


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
