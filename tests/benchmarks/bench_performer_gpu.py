"""FAVOR+ attention of foundry-plugin-performer against performer-pytorch and torch SDPA on a CUDA GPU.

    python tests/benchmarks/bench_performer_gpu.py [--sizes 1x1024 4x4096 4x16384] [--repeats 20]

The contenders, shapes and inputs of ``bench_performer.py`` (8 heads of 64, 256 features), on the
GPU: the mean wall time of ``--repeats`` calls after three warm-up calls, the device synchronised
before and after (kernels run asynchronously), of the forward pass without autograd and of
forward + backward, and the peak memory allocated on the device during forward + backward
(``torch.cuda.max_memory_allocated`` above what was allocated before). float32 products are
exact (TF32 off), as on the CPU. performer-pytorch is skipped with a message where it is not
installed, and for causal attention above ``--performer-max-n`` (its (n, m, d) prefix sums).
Without a CUDA device the script says so and exits.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

import torch
from bench_performer import foundry, performer_pytorch, qkv, sdpa


def mean_ms(run: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        run()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def measure(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], repeats: int) -> tuple[float, float, float]:
    """Forward ms (no autograd), forward + backward ms, peak MiB of forward + backward."""
    tracked = [t.detach().requires_grad_() for t in inputs]

    def forward() -> None:
        with torch.no_grad():
            fn(*inputs)

    def train() -> None:
        for t in tracked:
            t.grad = None
        out = fn(*tracked)
        out.backward(torch.ones_like(out))

    forward_ms, train_ms = mean_ms(forward, repeats), mean_ms(train, repeats)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    train()
    torch.cuda.synchronize()
    return forward_ms, train_ms, (torch.cuda.max_memory_allocated() - before) / 2**20


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1x1024", "4x1024", "4x4096", "4x16384"], help="BATCHxN")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--performer-max-n", type=int, default=4096, help="longest causal n run with performer-pytorch")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (bench_performer.py measures the CPU)", file=sys.stderr)
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    cuda = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; mean ms of {args.repeats} calls, peak MiB\n")
    print("| mode | batch | n | impl | fwd ms | fwd+bwd ms | peak MiB |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for causal in (True, False):
        reference = performer_pytorch(causal)
        if reference is None:
            print("performer-pytorch is not installed (pip install performer-pytorch): comparison skipped", file=sys.stderr)
        contenders = {"foundry FAVOR+": foundry(causal, 64).to(cuda), "torch SDPA": sdpa(causal)}
        if reference is not None:
            contenders["performer-pytorch"] = reference.to(cuda)
        for size in args.sizes:
            batch, n = (int(part) for part in size.split("x"))
            inputs = [t.to(cuda) for t in qkv(batch, n)]
            for name, fn in contenders.items():
                if name == "performer-pytorch" and causal and n > args.performer_max_n:
                    continue
                forward_ms, train_ms, peak = measure(fn, inputs, args.repeats)
                mode = "causal" if causal else "bidirectional"
                print(f"| {mode} | {batch} | {n} | {name} | {forward_ms:.2f} | {train_ms:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
