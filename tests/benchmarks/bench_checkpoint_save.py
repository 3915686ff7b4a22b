"""Saving a training checkpoint without waiting for the disk, against a durable save (``fsync``).

    python tests/benchmarks/bench_checkpoint_save.py [--rounds 5] [--preset base]

GPT-2 ``base`` is saved in interleaved rounds with ``model_foundry.save(..., durable=True)`` (every
file flushed before the rename, as ``final/`` is) and ``durable=False`` (as a run's intermediate
checkpoints are; both renamed into place atomically). Printed: the median times and their ratio.
Whether the flush is worth skipping depends on the disk; the run directory keeps one checkpoint
flushed before it prunes any (docs/checkpoints.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--preset", default="base")
    args = parser.parse_args()

    import torch

    import model_foundry
    from model_foundry.config import load_model_config

    torch.set_num_threads(1)
    model = model_foundry.create_model(load_model_config({"architecture": "gpt2", "preset": args.preset}))
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:  # the disk a run directory would be on
        for _ in range(args.rounds):
            for durable in (True, False):
                start = time.perf_counter()
                model_foundry.save(model, os.path.join(tmp, f"checkpoint-{durable}"), durable=durable)
                times[durable].append(time.perf_counter() - start)
    durable, deferred = statistics.median(times[True]), statistics.median(times[False])
    print(f"GPT-2 {args.preset}, {args.rounds} interleaved rounds")
    print(f"  durable save (fsync, as final/)             {durable * 1000:8.1f} ms")
    print(f"  deferred flush (as training checkpoints)    {deferred * 1000:8.1f} ms")
    print(f"  ratio {deferred / durable:.2f}x of the durable save's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
