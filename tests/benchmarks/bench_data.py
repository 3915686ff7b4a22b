"""Tokenize + pack throughput of model_foundry.text.data, and its cache-hit start-up.

1. Throughput: ``cached_tokens`` on a cold cache (read the file, split lines into documents,
   encode in batches, append eos, write the ids to disk) against the tokenizers library's own
   ``Tokenizer.encode_batch`` over the same documents held in memory (nothing read, nothing
   written). Goal: at least 0.8x its tokens per second.
2. Start-up: ``load_text_data`` on a warm cache against the cold first call. Goal: at least 50x
   faster.

The text is the quickstart's Shakespeare training file when it exists (``python -m
model_foundry.examples.shakespeare data/shakespeare``), else the plays straight from the
``shakespeare`` package. The median of ``--runs`` runs is reported.

    python tests/benchmarks/bench_data.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from model_foundry.examples.shakespeare import prepare
from model_foundry.text.config import TextDataConfig, TokenizerConfig
from model_foundry.text.data import cached_tokens, load_text_data, obtain_tokenizer, read_documents

THROUGHPUT_GOAL = 0.8
STARTUP_GOAL = 50.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-data-")
    try:
        train_path, _ = prepare(os.path.join(scratch, "shakespeare"))
        data = TextDataConfig(train_files=[train_path], validation_fraction=0.0, block_size=128)
        tokenizer = obtain_tokenizer(TokenizerConfig(vocab_size=8000), data, os.path.join(scratch, "tokenizer"))
        documents = list(read_documents(train_path, data))
        backend = tokenizer.backend_tokenizer
        size = os.path.getsize(train_path)
        print(f"text: {size / 1e6:.1f} MB, {len(documents):,} documents (lines); BPE vocabulary {len(tokenizer):,}")

        reference, ours, cold, warm = [], [], [], []
        for run in range(args.runs):
            started = time.perf_counter()
            encodings = backend.encode_batch(documents, add_special_tokens=False)
            reference.append(time.perf_counter() - started)
            tokens = sum(len(e.ids) for e in encodings) + len(documents)

            cache = os.path.join(scratch, f"cache-{run}")
            started = time.perf_counter()
            ids, _, hit = cached_tokens([train_path], data, tokenizer, cache)
            ours.append(time.perf_counter() - started)
            assert not hit and len(ids) == tokens, (len(ids), tokens)

            cache = os.path.join(scratch, f"startup-{run}")
            started = time.perf_counter()
            load_text_data(data, tokenizer, cache)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert load_text_data(data, tokenizer, cache).cache_hits == 1
            warm.append(time.perf_counter() - started)

        ref, mine = statistics.median(reference), statistics.median(ours)
        throughput = ref / mine
        print(f"tokenizers encode_batch (in memory): {tokens / ref:12,.0f} tokens/s")
        print(f"foundry read+tokenize+pack+write:    {tokens / mine:12,.0f} tokens/s   ratio {throughput:.2f}x "
              f"(goal >= {THROUGHPUT_GOAL}x)")
        startup = statistics.median(cold) / statistics.median(warm)
        print(f"start-up: first run {statistics.median(cold) * 1e3:,.1f} ms, cache hit {statistics.median(warm) * 1e3:,.2f} ms"
              f"   speed-up {startup:,.0f}x (goal >= {STARTUP_GOAL:.0f}x)")
        return 0 if throughput >= THROUGHPUT_GOAL and startup >= STARTUP_GOAL else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
