"""``foundry train CONFIG [--set k=v ...] [--resume]``: train the model a config describes.

Runs on one process by default; under ``accelerate launch`` or ``torchrun`` it runs
data-parallel with no change. Ctrl-C saves a checkpoint and exits with code 130.
"""

from __future__ import annotations

import os
import sys

from model_foundry.commands.validate import add_set_argument
from model_foundry.config import load_config

INTERRUPTED_EXIT = 130


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model from a config (see docs/training.md)", description=__doc__)
    parser.add_argument("config")
    add_set_argument(parser)
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from the newest checkpoint in training.output_dir (without it, earlier outputs there are replaced)",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    from model_foundry.training import train
    from model_foundry.training.reporting import LOSS_CURVE_FILE, METRICS_FILE, format_number

    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume, overrides=tuple(args.overrides))
    if result.interrupted:
        print(
            f"interrupted at step {result.step}; checkpoint saved to {result.checkpoint}\n"
            f"resume with: foundry train {args.config} --resume",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT
    if result.final is None:  # not the main process: it wrote nothing
        return 0
    summary = result.last_metrics
    print(f"done: {result.step} steps in {summary.get('elapsed', 0):.1f}s")
    if "loss" in summary:
        line = f"final training loss {summary['loss']:.4f}"
        evaluation = {k: v for k, v in result.last_evaluation.items() if k not in ("step", "elapsed")}
        if "eval_loss" in evaluation:
            line += " | validation " + ", ".join(
                f"{key.removeprefix('eval_')} {format_number(value)}" for key, value in evaluation.items()
            )
        print(line)
    print(f"model saved to {result.final}")
    print(f"metrics: {os.path.join(result.output_dir, METRICS_FILE)}; loss curve: {os.path.join(result.output_dir, LOSS_CURVE_FILE)}")
    return 0
