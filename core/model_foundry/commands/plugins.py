"""``foundry plugins [--json]``: installed plugin distributions, what each contributes, failures."""

from __future__ import annotations

from model_foundry.commands._output import print_json, print_table
from model_foundry.registry import list_plugins


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("plugins", help="list plugin distributions and failures", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON records")
    parser.set_defaults(run=run)


def run(args) -> int:
    rows = list_plugins()
    if args.json:
        print_json(rows)
        return 0
    table = []
    for row in rows:
        contributes = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in row["contributes"].items() if names)
        table.append([row["distribution"], row["version"], row["plugin"], row["status"], contributes or "-"])
    print_table(table, ["distribution", "version", "plugin", "status", "contributes"])
    for row in rows:
        for error in row["errors"]:
            print(f"\n{row['distribution']} {row['version']} ({row['plugin']}) {error}")
    return 0
