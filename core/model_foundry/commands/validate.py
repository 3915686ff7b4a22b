"""``foundry validate CONFIG [--set k=v ...] [--model-only | --data-only] [--json]``: check a config.

Besides the config itself: the model is built on the meta device (nothing allocated) and refused
when training it with AdamW (16 bytes per parameter) would need more memory than the machine has
(``FOUNDRY_MEMORY_LIMIT`` overrides), with the estimate in the message; text data files must exist, and ``data.block_size``
must fit the model's positions. So a config that validates does not fail later on these.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from model_foundry.commands._output import print_json
from model_foundry.config import SECTIONS, FoundryConfig, load_config
from model_foundry.errors import ConfigError, FoundryError, Problem
from model_foundry.registry import report_plugin_problems


def add_set_argument(parser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.transformer.layers=4 (repeatable)",
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("validate", help="check a config file and report every problem", description=__doc__)
    parser.add_argument("config", help="the YAML config file to check")
    add_set_argument(parser)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--model-only", action="store_true", help="check only the model section")
    only.add_argument("--data-only", action="store_true", help="check only the data section")
    parser.add_argument("--json", action="store_true", help="print the resolved config as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    sections = ("model",) if args.model_only else ("data",) if args.data_only else SECTIONS
    config = load_config(args.config, args.overrides, sections=sections)
    check_resources(config)
    report_plugin_problems()
    if args.json:
        print_json(config.to_dict())
        return 0
    parts = []
    if config.model is not None:
        parts.append(f"model: {config.model.architecture}" + (f" (preset {config.model.preset})" if config.model.preset else ""))
    parts += [name for name in ("tokenizer", "data", "training") if getattr(config, name) is not None]
    print(f"{args.config}: OK ({'; '.join(parts) or 'no sections'})")
    return 0


def check_resources(config: FoundryConfig) -> Any:
    """What the config asks of the machine, checked without allocating anything: the text data files
    exist, the model (built on the meta device) fits in memory for training, and ``data.block_size``
    fits its positions. Every problem is reported in one ConfigError; returns the meta-device model
    (None without a model section)."""
    from model_foundry.limits import build_on_meta, training_bound

    problems: list[Problem] = []

    def check(step: Callable[[], Any]) -> Any:
        try:
            return step()
        except ConfigError as exc:
            problems.extend(exc.problems)
        except FoundryError as exc:
            problems.append(Problem(str(exc), "model"))
        return None

    text = config.data is not None and config.data.kind == "text"
    if text:
        from model_foundry.text.data import resolve_files

        check(lambda: resolve_files(config.data.train_files, "data.train_files"))
        check(lambda: resolve_files(config.data.validation_files, "data.validation_files"))
    model = None
    if config.model is not None:
        try:
            model = check(lambda: build_on_meta(config, *training_bound()))
        except Exception as exc:  # noqa: BLE001 -- a builder that cannot run on the meta device still trains
            print(f"warning: the model could not be built on the meta device, so its size was not checked "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)
    if model is not None and text:
        from model_foundry.training.loop import check_block_size

        check(lambda: check_block_size(model, config.data))
    if problems:
        raise ConfigError(problems)
    return model
