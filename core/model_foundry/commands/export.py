"""``foundry export CHECKPOINT --to FORMAT OUT``: write a checkpoint in another format.

``--to hf`` writes a Hugging Face transformers directory (config.json, model.safetensors and
the tokenizer files when the checkpoint has a tokenizer). The weights written are those the
checkpoint samples with: the ``ema`` average when it was trained with one. The architecture's plugin says how,
through the ``foundry_exporters`` hook; the core only finds the exporter and makes the write
atomic, so that a failed export never leaves a half-written OUT behind.
"""

from __future__ import annotations

import os
from typing import Any

from model_foundry.checkpoint import atomic_directory, check_links, is_checkpoint, read_meta
from model_foundry.commands._checkpoint import open_checkpoint
from model_foundry.commands.sample import sampling_weights_of
from model_foundry.errors import FoundryError, did_you_mean
from model_foundry.factory import load_tokenizer
from model_foundry.records import Exporter, resolve
from model_foundry.registry import Registry, get_registry


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a checkpoint in another format (hf)", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint directory (or a directory a checkpoint converter reads)")
    parser.add_argument("--to", dest="format", required=True, metavar="FORMAT", help="target format, e.g. hf")
    parser.add_argument("output", help="directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")
    parser.set_defaults(run=run)


def find_exporter(architecture: str, format: str, registry: Registry | None = None) -> Exporter:
    """The installed exporter of ``architecture`` models to ``format``, or a FoundryError saying what exists."""
    registry = registry or get_registry()
    mine = [(spec, info) for spec, info in registry.exporters if spec.architecture == architecture]
    chosen = [(spec, info) for spec, info in mine if spec.format == format]
    if not chosen:
        formats = sorted({spec.format for spec, _ in mine})
        if formats:
            raise FoundryError(
                f"no installed plugin exports {architecture} checkpoints to {format!r}"
                f"{did_you_mean(format, formats)}; formats for {architecture}: {', '.join(formats)}"
            )
        raise FoundryError(f"{architecture} checkpoints cannot be exported: no installed plugin has an exporter for them")
    distributions = sorted({info.distribution for _, info in chosen})
    if len(distributions) > 1:
        raise FoundryError(
            f"{architecture} -> {format} export is provided by {', '.join(distributions)}; "
            "block one with FOUNDRY_PLUGINS_BLOCK"
        )
    return chosen[0][0]


def export_checkpoint(checkpoint: str, format: str, output: str, overwrite: bool = False) -> str:
    """Export ``checkpoint`` to ``format`` in the directory ``output``; returns the architecture."""
    if not os.path.isdir(checkpoint):
        raise FoundryError(f"checkpoint directory not found: {checkpoint!r}")
    if os.path.abspath(output) == os.path.abspath(checkpoint):
        raise FoundryError("OUT must be a different directory from the checkpoint")
    if os.path.exists(output) and not (os.path.isdir(output) and not os.listdir(output)) and not overwrite:
        raise FoundryError(f"{output!r} already exists; choose another directory or pass --overwrite")
    architecture = _saved_architecture(checkpoint)
    exporter = find_exporter(architecture, format) if architecture else None  # fail before loading weights
    opened = open_checkpoint(checkpoint)
    model = opened.model
    exporter = exporter or find_exporter(model.architecture, format)
    tokenizer = load_tokenizer(checkpoint) if os.path.isfile(os.path.join(checkpoint, "tokenizer.json")) else None
    # The weights the checkpoint samples with (the ema average when it was trained with one).
    with atomic_directory(output) as staging, sampling_weights_of(opened, None):
        resolve(exporter.export)(model, staging, tokenizer=tokenizer)
    return model.architecture


def _saved_architecture(checkpoint: str) -> Any:
    if not is_checkpoint(checkpoint):
        return None  # a foreign directory: the converter that loads it says what it is
    check_links(checkpoint)
    return read_meta(checkpoint)["architecture"]


def run(args) -> int:
    architecture = export_checkpoint(args.checkpoint, args.format, args.output, overwrite=args.overwrite)
    print(f"exported {architecture} checkpoint {args.checkpoint} as {args.format} to {args.output}")
    return 0
