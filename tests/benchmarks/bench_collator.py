"""Throughput of the core's masked_lm collator against transformers.DataCollatorForLanguageModeling.

Goal: at least 1.5x the examples per second of transformers' collator, both fed the same
examples (``{"input_ids": [...]}`` dicts, BERT-style blocks ``[CLS] ... [SEP]``) from the same
WordPiece tokenizer, one thread. Each run collates ``--batches`` batches; the median of
``--runs`` runs is reported.

    python tests/benchmarks/bench_collator.py [--runs 7] [--batches 50] [--batch-size 32] [--length 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import DataCollatorForLanguageModeling  # noqa: E402

import model_foundry  # noqa: E402
from model_foundry.text.config import TokenizerConfig  # noqa: E402

GOAL = 1.5
DATA = Path(__file__).resolve().parent.parent / "data"


def make_examples(tokenizer, count: int, length: int) -> list[dict[str, list[int]]]:
    """``count`` blocks of ``length`` ids: [CLS], running text, [SEP]; every fourth one shorter, to pad."""
    text = "\n".join((DATA / name).read_text(encoding="utf-8") for name in ("hindi.txt", "english.txt"))
    stream = tokenizer(text, add_special_tokens=False)["input_ids"]
    examples = []
    for index in range(count):
        body = length - 2 - (length // 3 if index % 4 == 3 else 0)
        start = (index * 37) % (len(stream) - body)
        examples.append({"input_ids": [tokenizer.cls_token_id, *stream[start:start + body], tokenizer.sep_token_id]})
    return examples


def examples_per_second(collator, batches: list[list[dict]], runs: int) -> float:
    collator(batches[0])  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for batch in batches:
            collator(batch)
        times.append(time.perf_counter() - start)
    return sum(len(batch) for batch in batches) / statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)

    config = TokenizerConfig(tokenizer_type="wordpiece", vocab_size=1000, min_frequency=1)
    tokenizer = model_foundry.train_tokenizer(config, [DATA / "hindi.txt", DATA / "english.txt"])
    examples = make_examples(tokenizer, args.batches * args.batch_size, args.length)
    batches = [examples[i:i + args.batch_size] for i in range(0, len(examples), args.batch_size)]

    ours = model_foundry.create_collator("masked_lm", tokenizer, mlm_probability=0.15, generator=0)
    reference = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15, return_tensors="pt")
    ours_rate = examples_per_second(ours, batches, args.runs)
    reference_rate = examples_per_second(reference, batches, args.runs)
    ratio = ours_rate / reference_rate
    shape = f"{args.batches} batches of {args.batch_size} x {args.length}, median of {args.runs} runs"
    print(f"masked_lm collation, {shape}")
    print(f"model_foundry MaskedLMCollator:               {ours_rate:10.0f} examples/s")
    print(f"transformers DataCollatorForLanguageModeling: {reference_rate:10.0f} examples/s")
    print(f"ratio: {ratio:.2f}x (goal >= {GOAL}x) -> {'met' if ratio >= GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
