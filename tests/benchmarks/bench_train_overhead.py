"""Per-step overhead of ``foundry train``'s loop against a raw PyTorch loop.

Both train the quickstart's GPT-2 (configs/quickstart.yaml) on the same Shakespeare blocks,
in the same order, through the same collator, with the same AdamW groups, schedule and
gradient clipping; the raw loop is the textbook ``forward; backward; clip; step; zero_grad``.
The foundry loop runs in-process through :func:`model_foundry.training.train` (Accelerate,
metrics, progress lines, interrupt handling included; evaluation and intermediate checkpoints
off). Per-step time is measured after ``--warmup`` steps; runs alternate and the median of
``--runs`` is reported. One thread. Goal: at most 3% overhead.

    python tests/benchmarks/bench_train_overhead.py [--steps 60] [--warmup 10] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from model_foundry.config import load_config  # noqa: E402
from model_foundry.examples.shakespeare import prepare  # noqa: E402
from model_foundry.factory import create_collator, create_model  # noqa: E402
from model_foundry.text.data import load_text_data, obtain_tokenizer  # noqa: E402
from model_foundry.training import train  # noqa: E402
from model_foundry.training.loop import BlockOrder, collate, lr_multiplier, parameter_groups  # noqa: E402
from model_foundry.training.reporting import read_metrics  # noqa: E402

GOAL = 0.03
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "quickstart.yaml")


def raw_step_seconds(config, tokenizer, blocks, steps: int, warmup: int) -> float:
    training = config.training
    torch.manual_seed(training.seed)
    model = create_model(config.model.evolve(vocab_size=len(tokenizer)))
    model.train()
    optimizer = torch.optim.AdamW(parameter_groups(model, training.weight_decay), lr=training.learning_rate,
                                  betas=(training.adam_beta1, training.adam_beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(training))
    order = BlockOrder(len(blocks), training.batch_size, training.seed, 0, 1)
    collator = create_collator(training.objective, tokenizer)
    device = torch.device("cpu")
    for step in range(steps):
        if step == warmup:
            started = time.perf_counter()
        batch = collate(collator, blocks, order.indices(step), device)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / (steps - warmup)


def foundry_step_seconds(config, warmup: int) -> float:
    train(config)
    elapsed = {r["step"]: r["elapsed"] for r in read_metrics(os.path.join(config.training.output_dir, "metrics.jsonl"))}
    last = config.training.max_steps
    return (elapsed[last] - elapsed[warmup]) / (last - warmup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scratch = tempfile.mkdtemp(prefix="bench-train-")
    try:
        train_path, valid_path = prepare(os.path.join(scratch, "shakespeare"))
        config = load_config(CONFIG, [
            f"data.train_files=[{train_path}]", f"data.validation_files=[{valid_path}]",
            f"data.cache_dir={scratch}/cache", f"training.output_dir={scratch}/run",
            f"training.max_steps={args.steps}", f"training.warmup_steps={args.warmup}",
            f"training.log_every={args.warmup}", "training.eval_every=0", "training.save_every=0",
        ])
        tokenizer = obtain_tokenizer(config.tokenizer, config.data, f"{scratch}/cache")
        blocks = load_text_data(config.data, tokenizer, f"{scratch}/cache").train
        print(f"model: {config.model.architecture}, batch {config.training.batch_size} x {config.data.block_size} tokens, "
              f"{args.steps} steps ({args.warmup} untimed), {torch.get_num_threads()} thread(s)")
        raw, ours = [], []
        for _ in range(args.runs):
            raw.append(raw_step_seconds(config, tokenizer, blocks, args.steps, args.warmup))
            ours.append(foundry_step_seconds(config, args.warmup))
        raw_median, ours_median = statistics.median(raw), statistics.median(ours)
        overhead = ours_median / raw_median - 1
        print(f"raw PyTorch loop: {raw_median * 1e3:8.2f} ms/step   (runs: {', '.join(f'{t * 1e3:.1f}' for t in raw)})")
        print(f"foundry train:    {ours_median * 1e3:8.2f} ms/step   (runs: {', '.join(f'{t * 1e3:.1f}' for t in ours)})")
        print(f"overhead: {overhead * 100:+.1f}% (goal <= {GOAL * 100:.0f}%)")
        return 0 if overhead <= GOAL else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
