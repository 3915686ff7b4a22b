"""``foundry train CONFIG [--set k=v ...] [--resume [PATH] | --overwrite]``: train the model a config describes.

Runs on one process by default; under ``accelerate launch`` or ``torchrun`` it runs
data-parallel with no change. Ctrl-C saves a checkpoint and exits with code 130. An
output_dir that holds an earlier run is continued with --resume or replaced with
--overwrite, never silently; one run at a time holds it.
"""

from __future__ import annotations

import os
import sys

from model_foundry.commands.validate import add_set_argument
from model_foundry.config import load_config

INTERRUPTED_EXIT = 130


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model from a config (see docs/training.md)", description=__doc__)
    parser.add_argument("config", help="the YAML config file of the run")
    add_set_argument(parser)
    earlier = parser.add_mutually_exclusive_group()
    earlier.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="PATH",
        help="continue from the newest readable checkpoint in training.output_dir; with PATH, from that "
        "checkpoint-<step> directory or the newest in that run directory",
    )
    earlier.add_argument(
        "--overwrite", action="store_true",
        help="delete the checkpoints, final/ and metrics of an earlier run in training.output_dir and start afresh",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    from model_foundry.training import train
    from model_foundry.training.allocator import keep_freed_memory
    from model_foundry.training.reporting import LOSS_CURVE_FILE, METRICS_FILE, format_number
    from model_foundry.training.rundir import resume_command

    keep_freed_memory()  # this process is the run's: its steps reuse the memory the step before freed
    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume, overrides=tuple(args.overrides), overwrite=args.overwrite)
    if result.interrupted:
        command = resume_command(args.config, args.overrides, result.output_dir, config.training.output_dir)
        print(
            f"interrupted at step {result.step}; checkpoint saved to {result.checkpoint}\nresume with: {command}",
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
