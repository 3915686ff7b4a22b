"""``foundry info ARCH [--json]``: an architecture's fields (types, defaults, docs) and presets."""

from __future__ import annotations

import json

import attrs

from model_foundry.commands._output import print_json, print_table
from model_foundry.commands.list import capability_labels
from model_foundry.errors import ConfigError, Problem
from model_foundry.fields import iter_fields, type_name, unstructure
from model_foundry.presets import preset_fields
from model_foundry.registry import find_architecture, get_registry, report_plugin_problems


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("info", help="show an architecture's fields and presets", description=__doc__)
    parser.add_argument("architecture", help="an installed architecture name, e.g. gpt2 (see foundry list)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    found = find_architecture(args.architecture, get_registry())
    if isinstance(found, str):
        raise ConfigError(Problem(found))
    report_plugin_problems()
    schema = found.schema
    fields = [
        {"name": name, "type": type_name(kind), "required": default is attrs.NOTHING,
         "default": None if default is attrs.NOTHING else unstructure(default), "doc": doc}
        for name, kind, default, doc in iter_fields(schema.config_class)
    ]
    if args.json:
        print_json({**found.as_record(), "fields": fields, "preset_values": {name: preset_fields(schema, name) for name in schema.presets}})
        return 0
    record = found.as_record()
    print(f"{schema.name} — {schema.description}")
    print(f"family: {schema.family or '-'}   from: {record['distribution']} {record['version']}")
    print(f"modality: {', '.join(record['modalities'])}   objectives: {', '.join(record['objectives']) or '-'}")
    print(f"capabilities: {', '.join(capability_labels(record['capabilities'])) or '-'}")
    print(f"presets: {', '.join(schema.presets) or '-'}\n")
    print_table(
        [[f["name"], f["type"], "(required)" if f["required"] else _yaml_value(f["default"]), f["doc"]] for f in fields],
        ["field", "type", "default", "description"],
    )
    return 0


def _yaml_value(value) -> str:
    """A default as it would be written in YAML (nested blocks show nothing)."""
    if isinstance(value, dict):
        return ""
    return json.dumps(value)
