"""``foundry validate CONFIG [--set k=v ...] [--model-only | --data-only] [--json]``: check a config."""

from __future__ import annotations

from model_foundry.commands._output import print_json
from model_foundry.config import SECTIONS, load_config


def add_set_argument(parser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.transformer.layers=4 (repeatable)",
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="check a config file and report every problem", description=__doc__)
    parser.add_argument("config")
    add_set_argument(parser)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--model-only", action="store_true", help="check only the model section")
    only.add_argument("--data-only", action="store_true", help="check only the data section")
    parser.add_argument("--json", action="store_true", help="print the resolved config as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    sections = ("model",) if args.model_only else ("data",) if args.data_only else SECTIONS
    config = load_config(args.config, args.overrides, sections=sections)
    if args.json:
        print_json(config.to_dict())
        return 0
    parts = []
    if config.model is not None:
        parts.append(f"model: {config.model.architecture}" + (f" (preset {config.model.preset})" if config.model.preset else ""))
    parts += [name for name in ("tokenizer", "data", "training") if getattr(config, name) is not None]
    print(f"{args.config}: OK ({'; '.join(parts) or 'no sections'})")
    return 0
