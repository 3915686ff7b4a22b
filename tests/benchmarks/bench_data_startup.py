"""A text run's data start-up: a cached run without transformers, a first run's tokenizing in parallel.

1. Cached run: in a fresh process that has imported torch (as a training run has), the time
   to get the quickstart's tokenizer and token ids back from the cache (``obtain_tokenizer`` +
   ``load_text_data``, the tokenizer read with the ``tokenizers`` library alone) against the same
   with the tokenizer loaded by transformers (``model_foundry.load_tokenizer``, as before).
   Rounds alternate; medians of wall and CPU seconds. Goal: at most 0.5x.
2. First run: ``encode_documents`` on the quickstart's training text, one 4.6 MB document
   (``document_per_line: false``): cut into pieces and encoded in a parallel batch, against the
   document encoded whole, as before (one thread does it all), and the pieces on one thread (the
   cost of cutting). Rounds rotate the order; the ids are checked identical. The speed-up is
   bounded by the cores the machine has free; no goal (reported).

Both with ``TOKENIZERS_PARALLELISM=true`` (the Makefile sets it to false for the tests).

    python tests/benchmarks/bench_data_startup.py [--rounds 7] [--only cached|first]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

os.environ["TOKENIZERS_PARALLELISM"] = "true"
os.environ.setdefault("OMP_NUM_THREADS", "1")

CACHED_GOAL = 0.5
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "quickstart.yaml")

RUN = textwrap.dedent("""
    import sys, time
    import torch  # a training process has it already: not counted
    from model_foundry.config import load_config
    config = load_config(sys.argv[1], sys.argv[3:])
    started, cpu = time.perf_counter(), time.process_time()
    from model_foundry.text.data import load_text_data, obtain_tokenizer
    if sys.argv[2] == "transformers":
        import glob
        from model_foundry.factory import load_tokenizer
        (directory,) = glob.glob(config.data.params.cache_dir + "/tokenizer-*")
        tokenizer = load_tokenizer(directory)
    else:
        tokenizer = obtain_tokenizer(config.tokenizer, config.data.params, config.data.params.cache_dir)
    assert load_text_data(config.data.params, tokenizer, config.data.params.cache_dir).cache_hits == 2
    print(time.perf_counter() - started, time.process_time() - cpu, "transformers" in sys.modules)
""")


def child_seconds(way: str, overrides: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (all threads) of a fresh process's data start-up, after ``import torch``."""
    done = subprocess.run([sys.executable, "-c", RUN, CONFIG, way, *overrides], capture_output=True, text=True, check=True)
    wall, cpu, imported = done.stdout.split()
    assert (imported == "True") == (way == "transformers"), imported
    return float(wall), float(cpu)


def cached_runs(overrides: list[str], rounds: int) -> float:
    times: dict[str, list[tuple[float, float]]] = {"transformers": [], "tokenizers": []}
    for number in range(rounds):
        for way in ("transformers", "tokenizers") if number % 2 == 0 else ("tokenizers", "transformers"):
            times[way].append(child_seconds(way, overrides))
    wall = {way: statistics.median(t[0] for t in runs) for way, runs in times.items()}
    cpu = {way: statistics.median(t[1] for t in runs) for way, runs in times.items()}
    print(f"cached run's data start-up (tokenizer and token ids back, fresh process after import torch), median of {rounds}")
    for way in times:
        print(f"  tokenizer read by {way:12s}: {wall[way]:6.3f} s wall, {cpu[way]:6.3f} s CPU")
    ratio = cpu["tokenizers"] / cpu["transformers"]
    print(f"  ratio {wall['tokenizers'] / wall['transformers']:.2f}x wall, {ratio:.2f}x CPU (goal <= {CACHED_GOAL}x)")
    return ratio


def first_runs(train_path: str, overrides: list[str], rounds: int) -> None:
    import numpy as np

    from model_foundry.config import load_config
    from model_foundry.text import data
    from model_foundry.text.data import encode_documents, obtain_tokenizer, read_documents

    config = load_config(CONFIG, overrides)
    tokenizer = obtain_tokenizer(config.tokenizer, config.data.params, config.data.params.cache_dir)
    documents = list(read_documents(train_path, config.data.params))
    piece_chars = data.PIECE_CHARS
    ways = {  # name: (PIECE_CHARS, TOKENIZERS_PARALLELISM)
        "whole document, as before": (sys.maxsize, "true"),
        "pieces, one thread": (piece_chars, "false"),
        "pieces, parallel batch": (piece_chars, "true"),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    arrays = {}
    for number in range(rounds):
        for name in list(ways)[number % 3:] + list(ways)[:number % 3]:
            data.PIECE_CHARS, os.environ["TOKENIZERS_PARALLELISM"] = ways[name]
            started, cpu = time.perf_counter(), time.process_time()
            arrays[name] = np.concatenate(list(encode_documents(tokenizer, documents)))
            times[name].append((time.perf_counter() - started, time.process_time() - cpu))
    data.PIECE_CHARS, os.environ["TOKENIZERS_PARALLELISM"] = piece_chars, "true"
    reference = arrays["whole document, as before"]
    assert all(np.array_equal(array, reference) for array in arrays.values())
    print(f"first run's tokenizing: {len(documents)} document(s), {sum(map(len, documents)) / 1e6:.1f} M characters, "
          f"{len(reference):,} tokens; {os.cpu_count()} cores, median of {rounds}")
    wall = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
    for name, runs in times.items():
        print(f"  {name:26s}: {wall[name]:6.3f} s wall, {statistics.median(t[1] for t in runs):6.3f} s CPU"
              f"   speed-up {wall['whole document, as before'] / wall[name]:.2f}x")
    print("  ids identical")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=["cached", "first"], help="run one of the two measurements")
    args = parser.parse_args()
    from model_foundry.config import load_config
    from model_foundry.examples.shakespeare import prepare
    from model_foundry.text.data import load_text_data, obtain_tokenizer

    scratch = tempfile.mkdtemp(prefix="bench-data-startup-")
    try:
        train_path, valid_path = prepare(os.path.join(scratch, "shakespeare"))
        overrides = [f"data.train_files=[{train_path}]", f"data.validation_files=[{valid_path}]",
                     f"data.cache_dir={scratch}/cache"]
        config = load_config(CONFIG, overrides)
        tokenizer = obtain_tokenizer(config.tokenizer, config.data.params, config.data.params.cache_dir)
        load_text_data(config.data.params, tokenizer, config.data.params.cache_dir)
        print(f"load average {os.getloadavg()[0]:.2f}")
        ratio = cached_runs(overrides, args.rounds) if args.only != "first" else 0.0
        if args.only != "cached":
            first_runs(train_path, overrides, args.rounds)
        print(f"load average {os.getloadavg()[0]:.2f}")
        return 0 if ratio <= CACHED_GOAL else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
