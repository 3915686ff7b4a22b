"""The ``foundry`` command line.

Each command lives in :mod:`model_foundry.commands` as a module with ``add_parser`` and
``run``; this module only wires them up. User errors (:class:`FoundryError`) are printed
without a traceback and exit with code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Sequence

from model_foundry.errors import FoundryError, FoundryWarning

COMMANDS = [
    "list", "plugins", "info", "schema", "validate", "build",
    "train", "generate", "sample", "eval", "export", "new_plugin",
]


def build_parser() -> argparse.ArgumentParser:
    from model_foundry import __version__

    parser = argparse.ArgumentParser(
        prog="foundry",
        description="Define, compare and train PyTorch architectures from typed YAML configs.",
    )
    parser.add_argument("--version", action="version", version=f"model-foundry {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"model_foundry.commands.{name}").add_parser(subparsers)
    for command in subparsers.choices.values():
        command.description = plain_text(command.description)
    return parser


def plain_text(docstring: str | None) -> str | None:
    """A command's module docstring as ``--help`` shows it: without RST's ``literal`` markup."""
    return docstring.replace("``", "") if docstring else docstring


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    try:
        return int(args.run(args) or 0)
    except FoundryError as exc:
        print(f"error: {exc}" if "\n" not in str(exc) else f"error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


_default_show_warning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Model Foundry's own warnings as one ``warning: ...`` line; others as Python shows them."""
    if issubclass(category, FoundryWarning):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


if __name__ == "__main__":
    sys.exit(main())
