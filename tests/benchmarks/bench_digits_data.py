"""Batches per second of the ``digits`` data path against a plain PyTorch DataLoader.

Ours: ``load_data`` (kind ``digits``, no validation split) once, then for each epoch a seeded
permutation cut into batches of 64, each fetched with ``ArrayDataset.batch`` (one numpy
fancy-index per key, wrapped by ``torch.from_numpy``). The reference: a ``TensorDataset``
over the same two tensors and a ``DataLoader(shuffle=True, batch_size=64)``, the way a
PyTorch user would write it. Both produce the same dict/tuple of (64, 1, 8, 8) float32 pixels
and int64 labels per batch; load time is reported apart and not counted. Goal: at least 0.9x
the reference's samples per second. For scale, a DataLoader that fetches each batch with one
tensor index (a ``BatchSampler`` as its sampler) is timed too. The median of ``--runs`` runs
is reported.

    python tests/benchmarks/bench_digits_data.py [--runs 5] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset  # noqa: E402

from model_foundry.config import parse_yaml, structure  # noqa: E402
from model_foundry.datasets import DataContext, load_data  # noqa: E402

GOAL = 0.9
BATCH_SIZE = 64


def processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ours(dataset, epochs: int, seed: int) -> int:
    generator = np.random.default_rng(seed)
    seen = 0
    for _ in range(epochs):
        order = generator.permutation(len(dataset))
        for start in range(0, len(order), BATCH_SIZE):
            batch = dataset.batch(order[start : start + BATCH_SIZE])
            seen += len(batch["pixel_values"])
    return seen


def reference(loader: DataLoader, epochs: int) -> int:
    seen = 0
    for _ in range(epochs):
        for pixels, _labels in loader:
            seen += len(pixels)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    section = structure(parse_yaml("data: {kind: digits, validation_fraction: 0}"), ("data",)).data
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        loaded = load_data(section, DataContext(cache_dir=cache))
        load_seconds = time.perf_counter() - started
    train = loaded.train
    tensors = TensorDataset(torch.from_numpy(train.arrays["pixel_values"]), torch.from_numpy(train.arrays["class_labels"]))
    loader = DataLoader(tensors, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(0))
    sampler = BatchSampler(RandomSampler(tensors, generator=torch.Generator().manual_seed(0)), BATCH_SIZE, drop_last=False)
    batched_loader = DataLoader(tensors, sampler=sampler, batch_size=None)
    print(f"processor: {processor()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"digits: {len(train)} examples, batch {BATCH_SIZE}, {args.epochs} epochs per run; load_data took {load_seconds:.3f} s")

    ours_rates, reference_rates, batched_rates = [], [], []
    for run in range(args.runs):
        started = time.perf_counter()
        seen = ours(train, args.epochs, run)
        ours_rates.append(seen / (time.perf_counter() - started))
        started = time.perf_counter()
        seen_reference = reference(loader, args.epochs)
        reference_rates.append(seen_reference / (time.perf_counter() - started))
        started = time.perf_counter()
        seen_batched = reference(batched_loader, args.epochs)
        batched_rates.append(seen_batched / (time.perf_counter() - started))
        assert seen == seen_reference == seen_batched == args.epochs * len(train)

    ours_rate, reference_rate = statistics.median(ours_rates), statistics.median(reference_rates)
    ratio = ours_rate / reference_rate
    print(f"{'path':<44} {'samples/s':>12}")
    print(f"{'load_data + ArrayDataset.batch':<44} {ours_rate:>12,.0f}")
    print(f"{'TensorDataset + DataLoader(shuffle=True)':<44} {reference_rate:>12,.0f}")
    print(f"{'TensorDataset + DataLoader(BatchSampler)':<44} {statistics.median(batched_rates):>12,.0f}")
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"ratio {ratio:.1f}x (goal >= {GOAL}x: {verdict})")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
