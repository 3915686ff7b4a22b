"""``foundry list [PATTERN] [--json]``: the installed architectures, with the modalities they model and
what they can do (generation, sampling, likelihood, ...)."""

from __future__ import annotations

from typing import Any, Mapping

from model_foundry.commands._output import print_json, print_table
from model_foundry.registry import list_architectures, report_plugin_problems


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("list", help="list installed architectures", description=__doc__)
    parser.add_argument("pattern", nargs="?", help="fnmatch-style filter, e.g. 'gpt*'")
    parser.add_argument("--json", action="store_true", help="print JSON records")
    parser.set_defaults(run=run)


def capability_labels(capabilities: Mapping[str, Any]) -> list[str]:
    """A record's capabilities for people: ``generation``, ``sampling``, ``likelihood (exact)``, ..."""
    return [
        f"{name} ({value})" if isinstance(value, str) else name.removeprefix("supports_")
        for name, value in capabilities.items() if value
    ]


def run(args) -> int:
    records = list_architectures(args.pattern)
    if args.json:
        print_json(records)
        return 0
    if not records:
        print("no architectures installed" + (f" matching {args.pattern!r}" if args.pattern else ""))
    rows = [
        [
            r["name"] + (" (conflict)" if r["conflict"] else ""),
            r["family"],
            ",".join(r["modalities"]),
            ",".join(r["objectives"]) or "-",
            ", ".join(capability_labels(r["capabilities"])) or "-",
            ",".join(r["presets"]) or "-",
            f"{r['distribution']} {r['version']}",
        ]
        for r in records
    ]
    if rows:
        print_table(rows, ["architecture", "family", "modality", "objectives", "capabilities", "presets", "distribution"])
    report_plugin_problems()
    return 0
