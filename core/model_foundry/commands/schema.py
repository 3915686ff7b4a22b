"""``foundry schema [ARCH]``: JSON Schema of an architecture's model section (or of a whole config)."""

from __future__ import annotations

from model_foundry.commands._output import print_json
from model_foundry.config import architecture_schema, config_schema


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("schema", help="print the JSON Schema of an architecture's config", description=__doc__)
    parser.add_argument("architecture", nargs="?", help="omit for the schema of a whole config file")
    parser.set_defaults(run=run)


def run(args) -> int:
    print_json(architecture_schema(args.architecture) if args.architecture else config_schema())
    return 0
