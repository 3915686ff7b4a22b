"""Wall time of `foundry list` in a fresh process against `python -c "import torch"`.

Goal: with every first-party plugin installed, listing takes under a quarter of the time
of importing torch. Both are measured here, in the same run, as the median of N runs.

    python tests/benchmarks/bench_list.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

GOAL = 0.25


def median_seconds(command: list[str], runs: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, capture_output=True, env=env)  # warm the file cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    foundry = shutil.which("foundry", path=os.path.dirname(sys.executable)) or shutil.which("foundry")
    listing = median_seconds([foundry, "list"], args.runs)
    torch_import = median_seconds([sys.executable, "-c", "import torch"], args.runs)
    count = subprocess.run([foundry, "list", "--json"], check=True, capture_output=True, text=True).stdout.count('"name"')
    ratio = listing / torch_import
    print(f"architectures listed:       {count}")
    print(f"foundry list (median of {args.runs}): {listing * 1000:8.1f} ms")
    print(f"import torch (median of {args.runs}): {torch_import * 1000:8.1f} ms")
    print(f"ratio: {ratio:.3f} (goal < {GOAL}) -> {'met' if ratio < GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
