"""Per-step overhead of `foundry train` on a GAN against a plain PyTorch loop, same modules and batches.

Each architecture's `small` preset on the 8x8 digits (batch 64, n_critic 1, no clipping, constant
learning rate): `foundry train` runs the plugin's adversarial step through the core's loop (two
AdamW optimizers through Accelerate, metrics, progress, interrupt handling; evaluation and
checkpoints off); the plain loop is the textbook

    opt_D.zero_grad(); D_loss.backward(); opt_D.step(); opt_G.zero_grad(); G_loss.backward(); opt_G.step()

on the same model (its `forward(part=...)`), examples, order, AdamW groups and schedule, with the
core's tests/benchmarks/bench_train_overhead.py loops. The two loops run in one process in turns of
one step, each step timed (why: the core benchmark's docstring); a loop's time per step is its mean
over the steps after the first `--warmup` of `--runs` runs. Goal: <= 5 % overhead, judged on the
ratio of the two. One thread.

    python plugins/foundry-plugin-gan/tests/benchmarks/bench_step_overhead.py [--runs 3] [--architectures gan wgan]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))

from bench_train_overhead import interleaved_runs, mean_ms, overhead_ratio, overhead_table, timing_overrides  # noqa: E402

from model_foundry.config import load_config  # noqa: E402
from model_foundry.datasets import DataContext, load_data  # noqa: E402

GOAL = 0.05


def plain_adversarial_step(model, batch, optimizers):
    """The textbook GAN update: the discriminator, then the generator, each from a zeroed gradient."""
    for part in ("discriminator", "generator"):
        optimizer = optimizers[part]
        optimizer.zero_grad(set_to_none=True)
        model(**batch, part=part).loss.backward()
        optimizer.step()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architectures", nargs="+", default=["gan", "dcgan", "wgan", "lsgan"])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scratch = tempfile.mkdtemp(prefix="bench-gan-")
    rows, met = [], True
    try:
        for architecture in args.architectures:
            path = os.path.join(scratch, f"{architecture}.yaml")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(
                    f"model: {{architecture: {architecture}, preset: small, n_critic: 1}}\ndata: {{kind: digits}}\n"
                    "training: {batch_size: 64, learning_rate: 2.0e-4, adam_beta1: 0.5, weight_decay: 0.0, "
                    "max_grad_norm: null, lr_scheduler: constant}\n"
                )
            config = load_config(path, timing_overrides(scratch, args.steps, args.warmup))
            images = load_data(config.data, DataContext(f"{scratch}/cache")).train
            print(f"{architecture}: small preset on digits, batch 64, {args.runs} runs of {args.steps} steps "
                  f"({args.warmup} untimed)", flush=True)
            plain, ours = interleaved_runs(config, None, images, args.steps, args.warmup, plain_adversarial_step,
                                                 args.runs)
            ratio = overhead_ratio(ours, plain)
            met &= ratio - 1 <= GOAL
            rows.append((f"`{architecture}`", plain, ours))
            print(f"[{architecture}] plain loop {mean_ms(plain)}, foundry train {mean_ms(ours)}, "
                  f"ratio {ratio:.3f}", flush=True)
        print(f"\n{overhead_table(rows)}")
        print(f"goal: ratio <= {1 + GOAL:.2f}")
        return 0 if met else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
