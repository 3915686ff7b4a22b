"""JSON Schema (draft 2020-12) of config classes, of an architecture's ``model`` section and of a
whole config file, so that editors can complete and check config files (``foundry schema``)."""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal, Mapping

import attrs

from model_foundry.config.checks import DEFAULT_DATA_KIND
from model_foundry.config.structuring import global_defaults
from model_foundry.config.training import TrainingConfig
from model_foundry.errors import ConfigError, Problem
from model_foundry.fields import DOC, field_types, unstructure
from model_foundry.registry import Registry, find_architecture, get_registry
from model_foundry.text.config import TokenizerConfig


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


def architecture_schema(name: str, registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of an architecture's ``model`` section."""
    registry = registry or get_registry()
    found = find_architecture(name, registry)
    if isinstance(found, str):
        raise ConfigError(Problem(found))
    schema = found.schema
    body = class_schema(schema.config_class, require=not schema.presets)
    body["properties"] = {
        "architecture": {"const": schema.name, "description": "the architecture to build"},
        "preset": {"enum": list(schema.presets), "description": "a complete config that the fields here override"},
        **body["properties"],
    }
    body.setdefault("required", [])
    body["required"] = ["architecture", *body["required"]]
    spec = global_defaults(schema.config_class)
    if spec:
        block, targets = spec
        merged: dict[str, Any] = {}
        for target in targets:
            merged.update(json_schema_of_target(body, target))
        body["properties"][block] = {
            "type": "object",
            "properties": merged,
            "additionalProperties": False,
            "description": f"defaults for {', '.join(targets)} (their own keys win)",
        }
    body["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    body["title"] = f"{schema.name} model section"
    return body


def json_schema_of_target(body: Mapping[str, Any], target: str) -> dict[str, Any]:
    prop = body["properties"].get(target, {})
    for candidate in [prop, *prop.get("anyOf", [])]:
        if candidate.get("type") == "object":
            return {k: v for k, v in candidate.get("properties", {}).items()}
    return {}


def config_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of a whole config file, with the model section as any installed architecture."""
    registry = registry or get_registry()
    models = [architecture_schema(name, registry) for name in sorted(registry.architectures)]
    for model in models:
        model.pop("$schema", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "model": {"oneOf": models},
            "tokenizer": json_schema(TokenizerConfig),
            "data": {"oneOf": [_data_schema(name, registry) for name in sorted(registry.datasets)]},
            "training": json_schema(TrainingConfig),
            "extensions": {
                "type": "object",
                "additionalProperties": False,
                "properties": {name: json_schema(entries[0][0].config_class) for name, entries in sorted(registry.extensions.items())},
            },
        },
    }


def _data_schema(kind: str, registry: Registry) -> dict[str, Any]:
    spec = registry.datasets[kind][0][0]
    body = class_schema(spec.config_class)
    body["properties"] = {"kind": {"const": kind, "description": spec.description}, **body["properties"]}
    if kind != DEFAULT_DATA_KIND:
        body["required"] = ["kind", *body.get("required", [])]
    return body
