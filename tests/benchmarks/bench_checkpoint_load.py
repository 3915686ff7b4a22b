"""Loading a checkpoint against transformers' ``from_pretrained``, GPT-2 ``base`` (124M parameters).

    python tests/benchmarks/bench_checkpoint_load.py [--rounds 9] [--preset base]

The same weights are saved twice, by ``model_foundry.save`` and by ``save_pretrained``; then, in
interleaved rounds after a warm-up, ``model_foundry.load`` and ``GPT2LMHeadModel.from_pretrained``
each load their directory (the files in the page cache for both). Printed: the median times and their
ratio, once for loading alone and once for loading and then reading every weight (a sum over all
parameters: both loaders map the file and read pages on first use). Goal: load <= 1.5x from_pretrained.
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
GOAL = 1.5


def read_everything(model) -> float:
    import torch

    with torch.no_grad():
        return float(sum(parameter.double().sum() for parameter in model.parameters()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--preset", default="base")
    args = parser.parse_args()

    import torch
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    import model_foundry
    from model_foundry.config import load_model_config

    torch.set_num_threads(1)
    logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = os.path.join(tmp, "foundry"), os.path.join(tmp, "hf")
        model = model_foundry.create_model(load_model_config({"architecture": "gpt2", "preset": args.preset}))
        model_foundry.save(model, ours)
        model.hf_model.save_pretrained(theirs)
        parameters = sum(parameter.numel() for parameter in model.parameters())
        del model

        def load_ours():
            return model_foundry.load(ours)

        def load_theirs():
            return GPT2LMHeadModel.from_pretrained(theirs)

        times: dict[str, list[float]] = {"ours": [], "theirs": [], "ours+read": [], "theirs+read": []}
        checks = []
        for round_ in range(args.rounds + 1):  # round 0 warms up both
            for name, loader in (("ours", load_ours), ("theirs", load_theirs)):
                start = time.perf_counter()
                loaded = loader()
                loaded_at = time.perf_counter()
                total = read_everything(loaded)
                read_at = time.perf_counter()
                if round_:
                    times[name].append(loaded_at - start)
                    times[f"{name}+read"].append(read_at - start)
                checks.append((name, total))
                del loaded
        sums = {name: total for name, total in checks}
        if abs(sums["ours"] - sums["theirs"]) > 1e-6 * max(1.0, abs(sums["theirs"])):
            print(f"the two loaders read different weights: {sums}", file=sys.stderr)
            return 1

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"GPT-2 {args.preset}: {parameters / 1e6:.1f}M parameters, {args.rounds} interleaved rounds, 1 thread")
    print(f"  model_foundry.load          {median['ours'] * 1000:8.1f} ms   (+ read every weight {median['ours+read'] * 1000:8.1f} ms)")
    print(f"  from_pretrained             {median['theirs'] * 1000:8.1f} ms   (+ read every weight {median['theirs+read'] * 1000:8.1f} ms)")
    ratio = median["ours"] / median["theirs"]
    print(f"  load ratio {ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'}); "
          f"load + read ratio {median['ours+read'] / median['theirs+read']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
