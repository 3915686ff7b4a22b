"""``foundry plugins [--json]``: installed plugin distributions, what each contributes, how long each
took to import, failures and warnings (slow imports, imports of torch, allow-list entries that match
nothing)."""

from __future__ import annotations

from model_foundry.commands._output import print_json, print_table
from model_foundry.registry import list_plugins, plugin_warnings


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
        seconds = row["import_seconds"]
        table.append([row["distribution"], row["version"], row["plugin"], row["status"],
                      "-" if seconds is None else f"{seconds:.2f}s", contributes or "-"])
    print_table(table, ["distribution", "version", "plugin", "status", "import", "contributes"])
    for row in rows:
        for error in row["errors"]:
            print(f"\n{row['distribution']} {row['version']} ({row['plugin']}) {error}")
    for warning in plugin_warnings():
        print(f"\nwarning: {warning}")
    return 0
