"""``foundry train`` as a whole process against a plain PyTorch script: steady-state speed and CPU.

Both are fresh processes training the quickstart's GPT-2 (configs/quickstart.yaml, batch 16 x 128
tokens, Shakespeare) on the same batches: the plain script loads the module ``foundry train``
builds (pickled whole by this benchmark) and the batches its collator makes, and runs the
textbook ``forward; backward; clip; AdamW step; zero_grad; scheduler step`` loop. Each process
prints a line every ``--window`` steps (``foundry train``'s own log lines); this benchmark reads
the process's CPU seconds and page faults from ``/proc`` as each line arrives, so both are
measured the same way over the same windows. Start-up and the first window are left out
(steady state). Rounds alternate the two processes; reported are medians over rounds of

* the seconds per step, by the arrival of the lines, and by each side's own clock (the run's
  reported ``tokens_per_sec``, the script's ``time.perf_counter``);
* the CPU seconds per step (all threads of the process);
* minor page faults per step and the process's threads.

Goal: ``foundry train`` at least 0.97x the plain script's speed. One thread
(``OMP_NUM_THREADS=1``), both processes with the same environment. ``--env NAME=VALUE`` sets a
variable for both (``MALLOC_ARENA_MAX=1``, ...), to test a cause.

    python tests/benchmarks/bench_train_process.py [--rounds 8] [--steps 160] [--window 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

GOAL = 0.97
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CONFIG = os.path.join(ROOT, "configs", "quickstart.yaml")
LINE = re.compile(r"^step (\d+) \| loss")
TICKS = os.sysconf("SC_CLK_TCK")


def prepare(scratch: str, steps: int, window: int) -> list[str]:
    """The run's overrides, its data and tokenizer cached, and the plain script's module and batches."""
    import torch

    from model_foundry.config import load_config
    from model_foundry.datasets import DataContext, load_data
    from model_foundry.evaluation import make_collator
    from model_foundry.examples.shakespeare import prepare as shakespeare
    from model_foundry.factory import create_model
    from model_foundry.text.data import obtain_tokenizer
    from model_foundry.training.loop import BlockOrder, collate

    train_path, valid_path = shakespeare(os.path.join(scratch, "shakespeare"))
    overrides = [
        f"data.train_files=[{train_path}]", f"data.validation_files=[{valid_path}]", f"data.cache_dir={scratch}/cache",
        f"training.max_steps={steps}", f"training.log_every={window}", "training.eval_every=0", "training.save_every=0",
    ]
    config = load_config(CONFIG, overrides)
    training = config.training
    tokenizer = obtain_tokenizer(config.tokenizer, config.data.params, f"{scratch}/cache")
    blocks = load_data(config.data, DataContext(f"{scratch}/cache", tokenizer=tokenizer)).train
    torch.manual_seed(training.seed)
    model = create_model(config.model.evolve(vocab_size=len(tokenizer)))
    collator = make_collator(training, config.model, config.data.params, "text", tokenizer, torch.Generator())
    order = BlockOrder(len(blocks), training.batch_size, training.seed, 0, 1)
    batches = [collate(collator, blocks, order.indices(step), torch.device("cpu")) for step in range(steps)]
    torch.save({"model": model, "batches": batches}, os.path.join(scratch, "plain.pt"))
    with open(os.path.join(scratch, "plain.json"), "w", encoding="utf-8") as handle:
        json.dump({key: getattr(training, key) for key in (
            "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "warmup_steps", "max_steps",
        )} | {"window": window}, handle)
    return overrides


def plain(scratch: str) -> None:
    """The reference: a plain PyTorch loop over the saved module and batches, printing a line per window."""
    import math

    import torch

    with open(os.path.join(scratch, "plain.json"), encoding="utf-8") as handle:
        settings = json.load(handle)
    saved = torch.load(os.path.join(scratch, "plain.pt"), weights_only=False)
    model, batches = saved["model"], saved["batches"]
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings["learning_rate"], betas=(settings["adam_beta1"], settings["adam_beta2"]),
    )
    warmup, total = settings["warmup_steps"], settings["max_steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else
                                                 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    model.train()
    started = time.perf_counter()
    for step, batch in enumerate(batches, 1):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if step % settings["window"] == 0:
            print(f"step {step} | loss {loss.item():.4f} | seconds {time.perf_counter() - started:.6f}", flush=True)


def proc_counters(pid: int) -> tuple[float, int, int]:
    """CPU seconds (all threads), minor page faults and threads of a running process."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[7]), int(fields[17])


def measure(command: list[str], env: dict[str, str], cwd: str) -> list[dict[str, float]]:
    """One process: at each window line, the wall time, CPU seconds, page faults and threads."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    marks, output = [], []
    for line in process.stdout:
        now = time.perf_counter()
        output.append(line)
        match = LINE.match(line)
        if match:
            cpu, faults, threads = proc_counters(process.pid)
            marks.append({"step": int(match.group(1)), "wall": now, "cpu": cpu, "faults": faults, "threads": threads,
                          "line": line})
    if process.wait() != 0:
        raise SystemExit(f"{command} failed:\n{''.join(output)}")
    return marks


def steady(marks: list[dict[str, float]]) -> dict[str, float]:
    """Per step from the end of the first window to the last line."""
    first, last = marks[0], marks[-1]
    steps = last["step"] - first["step"]
    return {
        "wall": (last["wall"] - first["wall"]) / steps,
        "cpu": (last["cpu"] - first["cpu"]) / steps,
        "faults": (last["faults"] - first["faults"]) / steps,
        "threads": last["threads"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--plain", metavar="DIR", help=argparse.SUPPRESS)  # the reference process itself
    args = parser.parse_args()
    if args.plain:
        plain(args.plain)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.update(item.split("=", 1) for item in args.env)
    os.environ.update(env)
    scratch = tempfile.mkdtemp(prefix="bench-train-process-")
    try:
        overrides = prepare(scratch, args.steps, args.window)
        foundry = os.path.join(os.path.dirname(sys.executable), "foundry")
        tokens = 16 * 128
        print(f"quickstart GPT-2, batch 16 x 128, {args.steps} steps, windows of {args.window} (the first left out), "
              f"{args.rounds} rounds; load average {os.getloadavg()[0]:.2f}; extra env: {args.env or 'none'}", flush=True)
        results: dict[str, list[dict[str, float]]] = {"plain": [], "foundry": []}
        own: dict[str, list[float]] = {"plain": [], "foundry": []}
        for round_number in range(args.rounds):
            for name in ("plain", "foundry") if round_number % 2 == 0 else ("foundry", "plain"):
                if name == "plain":
                    marks = measure([sys.executable, os.path.abspath(__file__), "--plain", scratch], env, scratch)
                    seconds = [float(m["line"].rsplit("seconds ", 1)[1]) for m in marks]
                    own[name].append((seconds[-1] - seconds[0]) / (marks[-1]["step"] - marks[0]["step"]))
                else:
                    run = os.path.join(scratch, f"run-{round_number}")
                    marks = measure([foundry, "train", CONFIG, *(f"--set={o}" for o in overrides),
                                     f"--set=training.output_dir={run}"], env, ROOT)
                    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as handle:
                        speeds = [r["tokens_per_sec"] for r in map(json.loads, handle) if "tokens_per_sec" in r][1:]
                    own[name].append(statistics.mean(tokens / s for s in speeds))  # same windows, equal lengths
                    shutil.rmtree(run)
                results[name].append(steady(marks))
            plain_now, foundry_now = results["plain"][-1], results["foundry"][-1]
            print(f"round {round_number + 1}: plain {plain_now['wall'] * 1e3:.1f} ms/step ({plain_now['cpu'] * 1e3:.1f} CPU), "
                  f"foundry {foundry_now['wall'] * 1e3:.1f} ms/step ({foundry_now['cpu'] * 1e3:.1f} CPU)"
                  f"   ratio {plain_now['wall'] / foundry_now['wall']:.3f}; load {os.getloadavg()[0]:.2f}", flush=True)

        def median(name: str, key: str) -> float:
            return statistics.median(r[key] for r in results[name])

        for key, label in (("wall", "ms/step (line arrival)"), ("cpu", "CPU ms/step"), ("faults", "page faults/step")):
            scale = 1e3 if key != "faults" else 1
            p, f = median("plain", key) * scale, median("foundry", key) * scale
            print(f"{label:24s} plain {p:9.2f}   foundry {f:9.2f}   speed ratio {p / f:.3f}")
        p, f = statistics.median(own["plain"]) * 1e3, statistics.median(own["foundry"]) * 1e3
        print(f"{'ms/step (own clocks)':24s} plain {p:9.2f}   foundry {f:9.2f}   speed ratio {p / f:.3f}")
        wins = sum(r_p["wall"] <= r_f["wall"] for r_p, r_f in zip(results["plain"], results["foundry"], strict=True))
        print(f"threads: plain {median('plain', 'threads'):.0f}, foundry {median('foundry', 'threads'):.0f}; "
              f"plain faster in {wins} of {args.rounds} rounds; load average {os.getloadavg()[0]:.2f}")
        ratio = median("plain", "wall") / median("foundry", "wall")
        print(f"foundry train / plain script speed: {ratio:.3f} (goal >= {GOAL})")
        return 0 if ratio >= GOAL else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
