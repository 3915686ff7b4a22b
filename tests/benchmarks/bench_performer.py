"""FAVOR+ attention of foundry-plugin-performer against performer-pytorch and torch SDPA, on one CPU thread.

    python tests/benchmarks/bench_performer.py                      # a few minutes
    python tests/benchmarks/bench_performer.py --quick              # under a minute
    python tests/benchmarks/bench_performer.py --max-n 16384 --markdown docs/plugins/performer-benchmarks.md

Attention alone: per-head queries, keys and values (batch, 8 heads, n, 64), 256 random features,
bidirectional and causal. For each size it reports the median time (the contenders take turns
in each round) of the forward pass (no autograd) and of forward + backward, the bytes autograd saves for the backward pass (summed
through ``torch.autograd.graph.saved_tensors_hooks``, each storage once) and the peak memory
allocated during forward + backward (from the profiler's allocation events), then the ratios
against performer-pytorch measured in the same run, and per-token decoding time with the
recurrent state against growing prefixes. performer-pytorch is only needed here (``pip install
performer-pytorch``); without it its columns are skipped with a message. It has no fused causal
kernel on CPU and keeps an (n, m, d) prefix sum, so its causal backward is only run where that
fits ``--memory-budget-gb``.

:func:`compare_modules` measures any two modules on the same inputs, e.g. one-layer models.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's start/stop chatter

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from foundry_plugin_performer.attention import FavorAttention  # noqa: E402
from torch import nn  # noqa: E402

HEADS, DIM_HEAD, NB_FEATURES = 8, 64, 256
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# --- measuring --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    forward_s: float | None = None
    train_s: float | None = None  # forward + backward
    saved_bytes: int | None = None
    peak_bytes: int | None = None


MIN_SECONDS = 2.0  # timed rounds continue past ``repeats`` until the runs have taken this long


def median_times(
    runs: dict[str, Callable[[], object]], repeats: int, min_seconds: float = MIN_SECONDS
) -> dict[str, float]:
    """Median CPU time of the process for each run, over at least ``repeats`` rounds after a warm-up
    round, and more (up to ten times as many) until the timed rounds have taken ``min_seconds``:
    fast runs get enough rounds for a stable median, slow ones are not repeated needlessly.

    The runs take turns within each round, so that a change in the machine's load during the
    measurement affects every contender alike rather than whichever was measured then.
    CPU time rather than wall time: on a shared machine other processes' load does not count.
    With one thread and an idle machine the two are the same.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    timed_rounds = -1  # the first round warms up
    while timed_rounds < repeats or (timed_rounds < 10 * repeats and sum(map(sum, times.values())) < min_seconds):
        for name, run in runs.items():
            start = time.process_time()
            run()
            if timed_rounds >= 0:
                times[name].append(time.process_time() - start)
        timed_rounds += 1
    return {name: statistics.median(values) for name, values in times.items()}


def median_time(run: Callable[[], object], repeats: int) -> float:
    """Median CPU time of one run (see :func:`median_times`)."""
    return median_times({"run": run}, repeats)["run"]


def forward_backward(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> None:
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    out.backward(torch.ones_like(out))


def saved_bytes(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> int:
    """Bytes autograd keeps for the backward pass of ``fn(*inputs)``; each storage counted once."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*inputs)
    del out
    return sum(storages.values())


def peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes allocated by ``run`` above what was allocated when it started (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as file:
            events = [e["args"] for e in json.load(file)["traceEvents"] if e.get("name") == "[memory]"]
    if not events:
        return 0
    start = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(e["Total Allocated"] for e in events) - start


def measure(
    contenders: dict[str, tuple[Callable[..., torch.Tensor], bool]], inputs: Sequence[torch.Tensor], repeats: int
) -> dict[str, Measurement]:
    """For each contender ``name: (fn, train)``: forward time (no autograd) and, when ``train``,
    forward + backward time, saved and peak memory. Contenders are timed in turns (:func:`median_times`)."""
    grads = [t.detach().requires_grad_() for t in inputs]

    def forward(fn: Callable[..., torch.Tensor]) -> Callable[[], object]:
        def run() -> None:
            with torch.no_grad():
                fn(*inputs)

        return run

    results = {name: Measurement() for name in contenders}
    forward_s = median_times({name: forward(fn) for name, (fn, _) in contenders.items()}, repeats)
    training = {name: fn for name, (fn, train) in contenders.items() if train}
    train_s = median_times(
        {name: lambda fn=fn: forward_backward(fn, grads) for name, fn in training.items()}, repeats
    )
    for name, result in results.items():
        result.forward_s = forward_s[name]
        if name in training:
            result.train_s = train_s[name]
            result.saved_bytes = saved_bytes(training[name], grads)
            result.peak_bytes = peak_bytes(lambda name=name: forward_backward(training[name], grads))
    return results


def compare_modules(
    ours: nn.Module, reference: nn.Module, make_inputs: Callable[[], Sequence[torch.Tensor]], repeats: int = 3
) -> tuple[Measurement, Measurement]:
    """Measure two modules on the same inputs (float tensors; gradients flow into all of them).

    Both run in train mode for forward + backward and in eval mode for the forward pass; the
    reference is measured first so that neither benefits from the other's warm allocator.
    """
    inputs = list(make_inputs())
    modules = {"reference": reference, "ours": ours}
    for module in modules.values():
        module.eval()
    forward_s = median_times({name: lambda m=m: m(*inputs) for name, m in modules.items()}, repeats)
    for module in modules.values():
        module.train()
    results = measure({name: (m, True) for name, m in modules.items()}, inputs, repeats)
    for name, result in results.items():
        result.forward_s = forward_s[name]
    return results["ours"], results["reference"]


# --- the contenders ------------------------------------------------------------------------------------


def foundry(causal: bool, chunk_size: int) -> Attention:
    return FavorAttention(DIM_HEAD, NB_FEATURES, causal=causal, chunk_size=chunk_size)


def sdpa(causal: bool) -> Attention:
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def performer_pytorch(causal: bool) -> Attention | None:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            from performer_pytorch import FastAttention

            return FastAttention(dim_heads=DIM_HEAD, nb_features=NB_FEATURES, causal=causal)
    except ImportError:
        return None


def performer_saved_estimate(batch: int, n: int) -> int:
    """performer-pytorch's causal CPU path keeps a float (n, m, d) prefix sum per head, and a little more."""
    return int(1.25 * 4 * batch * HEADS * n * NB_FEATURES * DIM_HEAD)


# --- the runs --------------------------------------------------------------------------------------------


def qkv(batch: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, HEADS, n, DIM_HEAD, generator=g) for _ in range(3)]


def attention_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for causal in (False, True):
        reference = performer_pytorch(causal)
        for batch in args.batches:
            n = 512
            while n * batch <= args.max_n:
                contenders = {"foundry": (foundry(causal, args.chunk_size), True)}
                if n <= args.sdpa_max_n:
                    contenders["sdpa"] = (sdpa(causal), True)
                if reference is not None and n <= args.performer_max_n:
                    train = not causal or performer_saved_estimate(batch, n) <= args.memory_budget_gb * 2**30
                    contenders["performer"] = (reference, train)
                row = {"mode": "causal" if causal else "bidirectional", "batch": batch, "n": n}
                row.update(measure(contenders, qkv(batch, n), args.repeats))
                rows.append(row)
                print(format_row(row), flush=True)
                n *= 2
    return rows


def per_token_times(favor: FavorAttention, n: int, repeats: int, tokens: int = 64) -> tuple[float, float]:
    """Seconds per new token after a prefix of n: FAVOR+ recurrent state, and SDPA over a KV cache."""
    q, k, v = qkv(1, n + tokens)
    with torch.no_grad():
        _, prefix_state = favor.step(q[:, :, :n], k[:, :, :n], v[:, :, :n], None)

        def favor_tokens() -> None:
            state = prefix_state
            for t in range(n, n + tokens):
                _, state = favor.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)

        def sdpa_tokens() -> None:
            for t in range(n, n + tokens):
                F.scaled_dot_product_attention(q[:, :, t : t + 1], k[:, :, : t + 1], v[:, :, : t + 1])

        times = median_times({"favor": favor_tokens, "sdpa": sdpa_tokens}, repeats)
        return times["favor"] / tokens, times["sdpa"] / tokens


def decoding_rows(args: argparse.Namespace) -> list[dict]:
    favor = foundry(True, args.chunk_size)
    rows = []
    n = 512
    while n <= args.max_n:
        ours, exact = per_token_times(favor, n, args.repeats)
        rows.append({"n": n, "foundry": ours, "sdpa": exact})
        print(f"decode  n={n:>6}  foundry {ours * 1e6:8.1f} us/token   sdpa kv-cache {exact * 1e6:8.1f} us/token")
        n *= 2
    return rows


# --- reporting -------------------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.1f}"


def mib(size: int | None) -> str:
    return "–" if size is None else f"{size / 2**20:.0f}"


def ratio(theirs: float | None, ours: float | None) -> float | None:
    return None if theirs is None or ours is None or ours == 0 else theirs / ours


def times(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def row_ratios(row: dict) -> dict[str, float | None]:
    ours, performer, exact = row["foundry"], row.get("performer"), row.get("sdpa")
    return {
        "fwd": ratio(performer and performer.forward_s, ours.forward_s),
        "train": ratio(performer and performer.train_s, ours.train_s),
        "saved": ratio(performer and performer.saved_bytes, ours.saved_bytes),
        "sdpa_fwd": ratio(exact and exact.forward_s, ours.forward_s),
        "sdpa_train": ratio(exact and exact.train_s, ours.train_s),
    }


def format_row(row: dict) -> str:
    ours, r = row["foundry"], row_ratios(row)
    return (
        f"{row['mode']:>13} b={row['batch']} n={row['n']:>6}  foundry fwd {ms(ours.forward_s)} ms, "
        f"fwd+bwd {ms(ours.train_s)} ms, saved {mib(ours.saved_bytes)} MiB | vs performer-pytorch: "
        f"fwd {times(r['fwd'])}, fwd+bwd {times(r['train'])}, saved 1/{times(r['saved'])} | "
        f"vs SDPA: fwd {times(r['sdpa_fwd'])}, fwd+bwd {times(r['sdpa_train'])}"
    )


def attention_table(rows: list[dict]) -> list[str]:
    lines = [
        "| mode | batch | n | impl | fwd ms | fwd+bwd ms | saved MiB | peak MiB | speed-up fwd | speed-up fwd+bwd | saved ÷ |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours = row["foundry"]
        for name, label in (("foundry", "foundry FAVOR+"), ("performer", "performer-pytorch"), ("sdpa", "torch SDPA")):
            m = row.get(name)
            if m is None:
                continue
            extra = ["", "", ""]
            if name != "foundry":
                extra = [times(ratio(m.forward_s, ours.forward_s)), times(ratio(m.train_s, ours.train_s)),
                         times(ratio(m.saved_bytes, ours.saved_bytes))]
            lines.append(
                f"| {row['mode']} | {row['batch']} | {row['n']} | {label} | {ms(m.forward_s)} | {ms(m.train_s)} | "
                f"{mib(m.saved_bytes)} | {mib(m.peak_bytes)} | " + " | ".join(extra) + " |"
            )
    return lines


def goals(rows: list[dict], decoding: list[dict]) -> list[str]:
    """The issue's goals, each with the worst case measured in this run."""

    def worst(mode: str, key: str, min_n: int = 0) -> float | None:
        values = [row_ratios(r)[key] for r in rows if r["mode"] == mode and r["n"] >= min_n]
        values = [v for v in values if v is not None]
        return min(values) if values else None

    checks = [
        ("causal forward ≥ 8× performer-pytorch", worst("causal", "fwd"), 8),
        ("causal forward+backward ≥ 5× performer-pytorch", worst("causal", "train"), 5),
        ("causal saved memory ≤ 1/8 of performer-pytorch", worst("causal", "saved"), 8),
        ("bidirectional forward ≥ 1.5× performer-pytorch", worst("bidirectional", "fwd"), 1.5),
        ("bidirectional forward+backward ≥ 1.5× performer-pytorch", worst("bidirectional", "train"), 1.5),
        ("bidirectional forward faster than SDPA from n = 4096", worst("bidirectional", "sdpa_fwd", 4096), 1),
        ("bidirectional forward+backward faster than SDPA from n = 4096", worst("bidirectional", "sdpa_train", 4096), 1),
        ("causal forward faster than SDPA from n = 8192", worst("causal", "sdpa_fwd", 8192), 1),
        ("causal forward+backward faster than SDPA from n = 8192", worst("causal", "sdpa_train", 8192), 1),
    ]
    if decoding:
        per_token = [d["foundry"] for d in decoding]
        checks.append(("per-token decoding time flat in n (max ÷ min ≤ 1.5)", 1.5 * min(per_token) / max(per_token), 1))
    lines = ["| goal | worst measured | met |", "|---|---:|---|"]
    for text, value, target in checks:
        if value is None:
            lines.append(f"| {text} | not measured in this run | – |")
        elif text.startswith("per-token"):
            lines.append(f"| {text} | {max(per_token) / min(per_token):.2f} | {'yes' if value >= target else 'no'} |")
        else:
            lines.append(f"| {text} | {value:.2f}× | {'yes' if value >= target else 'no'} |")
    return lines


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else the machine type: ratios between
    implementations differ between processors, so the page records which one measured them."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    return platform.processor() or platform.machine()


def markdown(args: argparse.Namespace, rows: list[dict], decoding: list[dict], performer_found: bool) -> str:
    command = "python tests/benchmarks/bench_performer.py " + " ".join(sys.argv[1:])
    performer_version = importlib.metadata.version("performer-pytorch") if performer_found else None
    lines = [
        "# Performer attention benchmarks",
        "",
        "FAVOR+ attention of `foundry-plugin-performer` (`FavorAttention`) against "
        "[performer-pytorch](https://github.com/lucidrains/performer-pytorch)'s `FastAttention` "
        "and exact attention (`torch.nn.functional.scaled_dot_product_attention`), attention alone: "
        f"{HEADS} heads, head dimension {DIM_HEAD}, {NB_FEATURES} random features, float32, one thread. "
        "Times are medians of the process's CPU time over rounds in which the contenders take turns "
        f"(at least {args.repeats}, more until {MIN_SECONDS:g} s); *saved* is what autograd keeps for the "
        "backward pass; *peak* is the most "
        "memory allocated during forward + backward. Speed-ups and the saved-memory factor are the "
        "other implementation's numbers divided by ours (above 1: we are faster / keep less).",
        "",
        f"Generated by `{command.strip()}` on {cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), chunk size {args.chunk_size}"
        + (f", performer-pytorch {performer_version}." if performer_version else "."),
        "",
    ]
    if not performer_found:
        lines += ["performer-pytorch was not installed: its comparison was skipped.", ""]
    lines += ["## Goals", "", *goals(rows, decoding), "", "## Attention", "", *attention_table(rows), ""]
    lines += [
        f"A dash: not run. performer-pytorch is run up to n = {args.performer_max_n}, its causal backward only "
        f"where its (n, m, d) prefix sums fit in {args.memory_budget_gb:g} GiB, and SDPA up to n = {args.sdpa_max_n}.",
        "",
    ]
    if decoding:
        lines += [
            "## Decoding",
            "",
            "Time of one new token after a prefix of n tokens (batch 1): the FAVOR+ recurrent state "
            "against exact attention over a key/value cache.",
            "",
            "| n | foundry µs/token | SDPA KV-cache µs/token |",
            "|---:|---:|---:|",
            *(f"| {d['n']} | {d['foundry'] * 1e6:.0f} | {d['sdpa'] * 1e6:.0f} |" for d in decoding),
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n up to 2048, one batch size, 3 repeats")
    parser.add_argument("--max-n", type=int, default=8192, help="largest batch × sequence length (default 8192)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="batch sizes (default 1 4)")
    parser.add_argument(
        "--repeats", type=int, default=5,
        help=f"least timed rounds per measurement (median); fast runs get more, until {MIN_SECONDS:g} s",
    )
    parser.add_argument("--chunk-size", type=int, default=64, help="FAVOR+ causal chunk size")
    parser.add_argument("--performer-max-n", type=int, default=8192, help="longest n run with performer-pytorch")
    parser.add_argument("--sdpa-max-n", type=int, default=16384, help="longest n run with SDPA")
    parser.add_argument(
        "--memory-budget-gb", type=float, default=2.0,
        help="skip performer-pytorch causal backward runs whose prefix sums are estimated above this "
        "(default 2; at 4, batch 4 with n = 1024 ran a 24 GiB machine out of memory while profiling)",
    )
    parser.add_argument("--markdown", help="write the results as a Markdown page to this path")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_n, args.batches, args.repeats = min(args.max_n, 2048), [1], 3
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(0)
    performer_found = performer_pytorch(False) is not None
    if not performer_found:
        print("performer-pytorch is not installed (pip install performer-pytorch): comparison skipped", file=sys.stderr)
    rows = attention_rows(args)
    decoding = decoding_rows(args)
    page = markdown(args, rows, decoding, performer_found)
    print("\n" + page)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(page)


if __name__ == "__main__":
    main()
