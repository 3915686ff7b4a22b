"""``foundry sample CHECKPOINT --num-samples N --out STEM [--seed S] [--condition C]``: draw samples.

For every model whose architecture can sample (images, audio, points, ...; text models use
``foundry generate``). The samples are drawn with the checkpoint's averaged weights when it was
trained with the ``ema`` extension, and written the way the data's modality shows them: an
image grid PNG, a scatter PNG of points, one WAV per audio clip; always also ``STEM.npy`` with
the raw batch. ``--seed`` makes them repeatable on any ``--device``; ``--condition C`` draws
every sample from class C of a conditional model.
"""

from __future__ import annotations

import os
from typing import Any

from model_foundry.commands._device import add_device_argument, device_from
from model_foundry.commands._output import print_json
from model_foundry.errors import FoundryError

# What --out may end with: the stem is what comes before (a modality writes several files).
OUTPUT_EXTENSIONS = (".png", ".npy", ".wav")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="draw samples from a checkpoint (non-text models)", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint directory, e.g. runs/gaussian-moons/final")
    parser.add_argument("--num-samples", type=int, default=64, help="samples to draw (default: 64)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable samples")
    parser.add_argument("--out", required=True, help="where to write: a path stem (samples -> samples.png, samples.npy)")
    parser.add_argument("--condition", type=int, default=None, help="class label to draw every sample from (conditional models)")
    add_device_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    import torch

    from model_foundry.commands._checkpoint import open_checkpoint
    from model_foundry.protocol import require_capability

    if args.num_samples < 1:
        raise FoundryError(f"--num-samples must be >= 1, got {args.num_samples}")
    device = device_from(args.device)
    opened = open_checkpoint(args.checkpoint, device)
    model, capabilities = opened.model, opened.capabilities
    advice = "it is a text model: use `foundry generate` to continue a prompt" if capabilities.supports_generation else ""
    require_capability(model, "sampling", capabilities, advice)
    conditions = None
    if args.condition is not None:
        conditions = torch.full((args.num_samples,), check_condition(model, capabilities, args.condition), device=device)
    generator = torch.Generator()
    generator.manual_seed(args.seed) if args.seed is not None else generator.seed()
    with sampling_weights_of(opened, device):
        samples = model.sample(args.num_samples, generator=generator, conditions=conditions)
    files = write_samples(samples, output_stem(args.out), opened.modality, opened.writer_info)
    if args.json:
        print_json({
            "checkpoint": args.checkpoint, "architecture": model.architecture, "modality": opened.modality,
            "num_samples": args.num_samples, "seed": args.seed, "condition": args.condition,
            "shape": list(samples.shape), "files": files,
        })
    else:
        what = f" of class {args.condition}" if args.condition is not None else ""
        print(f"{args.num_samples} {opened.modality} samples{what} from {model.architecture} ({args.checkpoint}):")
        for path in files:
            print(f"  {path}")
    return 0


def check_condition(model: Any, capabilities: Any, condition: int) -> int:
    """``condition`` when the model is conditional and has that class; a FoundryError otherwise."""
    if not capabilities.conditional or model.num_classes is None:
        raise FoundryError(
            f"--condition {condition}: this {model.architecture} model is unconditional; sample without --condition"
        )
    if not 0 <= condition < model.num_classes:
        raise FoundryError(
            f"--condition {condition} is out of range: this {model.architecture} model has {model.num_classes} classes, "
            f"0 to {model.num_classes - 1}"
        )
    return condition


def sampling_weights_of(opened: Any, device: Any) -> Any:
    """A context with the weights the checkpoint's extensions sample with (EMA) swapped in."""
    from model_foundry.extensions import build_extensions, load_extension_states, sampling_weights

    extensions = build_extensions(opened.config.get("extensions"), opened.model)
    load_extension_states(extensions, opened.directory, device)
    return sampling_weights(extensions, opened.model)


def output_stem(out: str) -> str:
    """``--out`` without a file extension the writers add (``grid.png`` -> ``grid``)."""
    root, extension = os.path.splitext(out)
    return root if extension.lower() in OUTPUT_EXTENSIONS else out


def write_samples(samples: Any, stem: str, modality: str, info: Any) -> list[str]:
    """Write ``samples`` with ``modality``'s writer; returns the paths written."""
    from model_foundry.evaluation import write_modality_samples
    from model_foundry.registry import get_registry, unique_entry

    spec = unique_entry(get_registry().modalities, modality, "modality")
    if isinstance(spec, str):
        raise FoundryError(f"cannot write the samples: {spec}")
    try:
        return write_modality_samples(spec, samples, stem, info)
    except OSError as exc:
        raise FoundryError(f"cannot write samples to {stem!r}: {exc.strerror or exc}") from None
