"""``foundry build CONFIG [--set k=v ...] [--json] [--materialize] [--depth N]``: size up a model.

Builds the model a config describes on the meta device (no memory allocated, instant even for
billions of parameters; ``--materialize`` builds it for real) and prints its parameter count,
a memory estimate (the weights; training with AdamW: weights + gradients + two moments,
activations not included) and a table of its modules with their parameter counts.
"""

from __future__ import annotations

from typing import Any

import attrs

from model_foundry.commands._output import human_bytes, human_count, print_json, print_table
from model_foundry.commands.validate import add_set_argument
from model_foundry.config import FoundryConfig, load_config
from model_foundry.factory import create_model
from model_foundry.limits import build_on_meta, memory_limit

CONTAINERS = ("ModuleList", "ModuleDict", "Sequential")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("build", help="build a model (on the meta device) and show its size", description=__doc__)
    parser.add_argument("config", help="the YAML config file whose model to build")
    add_set_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--materialize", action="store_true", help="allocate real weights instead of the meta device")
    parser.add_argument("--depth", type=int, default=2, help="module table depth below the model (default 2)")
    parser.set_defaults(run=run)


def summarize(model: Any, depth: int = 2) -> dict[str, Any]:
    """Parameter counts, memory footprint and per-module table of a built model (meta device or not)."""
    from model_foundry.protocol import FoundryModel, memory_footprint

    modules = module_table(model, depth)
    parameters = sum(row["parameters"] for row in modules)
    return {
        "architecture": model.architecture if isinstance(model, FoundryModel) else type(model).__name__,
        "dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}),
        "num_parameters": parameters,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        # Any nn.Module: the accounting needs nothing but parameters() and buffers().
        "memory": memory_footprint(model),
        "modules": modules,
    }


def module_table(model: Any, depth: int) -> list[dict[str, Any]]:
    """Rows ``{name, type, parameters, shared}``, down to ``depth`` levels below the model.

    Wrappers with a single child are looked through, and stacks (ModuleList, Sequential)
    are one row. Each parameter counts once, in the first row that holds it; a later row
    holding tied weights says so in ``shared``. The rows add up to the model's total.
    """
    root, prefix = model, ""
    while len(children := list(root.named_children())) == 1 and not list(root.named_parameters(recurse=False)):
        name, root = children[0]
        prefix += name + "."
    counted: dict[int, str] = {}
    rows: list[dict[str, Any]] = []

    def add(name: str, kind: str, parameters: list[Any]) -> None:
        new = [p for p in parameters if id(p) not in counted]
        shared = sorted({counted[id(p)] for p in parameters if id(p) in counted})
        for parameter in new:
            counted[id(parameter)] = name
        if parameters:
            rows.append({"name": name, "type": kind, "parameters": sum(p.numel() for p in new), "shared": shared})

    def visit(module: Any, path: str, level: int) -> None:
        for name, parameter in module.named_parameters(recurse=False):
            add(f"{path}{name}", "Parameter", [parameter])
        for name, child in module.named_children():
            child_path = f"{path}{name}"
            kind = type(child).__name__
            if kind in CONTAINERS and len(child):
                kind = f"{len(child)} x {type(next(iter(child.children()))).__name__}"
            if level < depth and type(child).__name__ not in CONTAINERS and any(True for _ in child.children()):
                visit(child, child_path + ".", level + 1)
            else:
                add(child_path, kind, list(child.parameters()))

    visit(root, prefix, 1)
    return rows


def _vocab_note(config: FoundryConfig, model: Any) -> tuple[Any, str | None]:
    """The model's vocabulary size and where it came from (None for models without one)."""
    if "vocab_size" not in attrs.fields_dict(type(config.model.params)):
        return None, None
    given, built = config.model.params.vocab_size, model.config.params.vocab_size
    if given is not None:
        return built, "model.vocab_size"
    if built is None:
        return None, None  # a model without a vocabulary (e.g. an embedding-level Performer)
    return built, "tokenizer.vocab_size" if config.tokenizer is not None else "the default tokenizer's vocab_size"


def run(args) -> int:
    config = load_config(args.config, args.overrides)  # the data section decides the modality a model is built for
    # Sized up on the meta device first, under a time bound, so that 1e5 layers answers at once.
    weights_fit = memory_limit() // 4 if args.materialize else None
    model = build_on_meta(config, weights_fit, "lower the sizes in the config (or set FOUNDRY_MEMORY_LIMIT)")
    if args.materialize:
        model = create_model(config)
    summary = summarize(model, args.depth)
    vocab_size, vocab_source = _vocab_note(config, model)
    summary.update(
        device="cpu" if args.materialize else "meta",
        preset=config.model.preset,
        vocab_size=vocab_size,
        vocab_size_source=vocab_source,
    )
    if args.json:
        print_json(summary)
        return 0
    where = "built for real" if args.materialize else "built on the meta device (no memory allocated)"
    print(f"{summary['architecture']}" + (f" (preset {summary['preset']})" if summary["preset"] else "") + f": {where}")
    if vocab_source:
        print(f"vocab_size: {vocab_size} (from {vocab_source})")
    total, trainable = summary["num_parameters"], summary["trainable_parameters"]
    print(f"parameters: {human_count(total)} ({total:,}); trainable: {human_count(trainable)} ({trainable:,})")
    memory = summary["memory"]
    print(f"memory ({', '.join(summary['dtypes'])}):")
    print(f"  weights and buffers:  {human_bytes(memory['total'])}")
    print(f"  training with AdamW:  {human_bytes(memory['training_adamw'])}"
          "  (weights + gradients + 2 moments; activations not included)\n")
    rows = [
        [row["name"], row["type"], f"{row['parameters']:,}", f"{100 * row['parameters'] / max(total, 1):.1f}%",
         f"tied to {', '.join(row['shared'])}" if row["shared"] else ""]
        for row in summary["modules"]
    ]
    print_table(rows, ["module", "type", "parameters", "share", "note"])
    return 0
