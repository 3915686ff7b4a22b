"""A one-layer Performer model side by side with performer-pytorch: time and saved memory.

Both models: d_model 512, 8 heads of 64, 256 random features, a 4x GELU feed-forward, pre-LayerNorm,
no dropout, no positions (performer-pytorch's ``Performer`` has none), batch 1, one thread.
Measured in one run, for a causal (decoder) and a bidirectional (encoder) layer:

* forward time and forward+backward time, median CPU time of ``--runs`` runs (as in
  ``bench_performer.py``, whose timer this script uses);
* saved memory: bytes of the tensors autograd keeps for the backward pass (each storage
  counted once), the memory a training step holds per layer beyond the weights;
* per-token generation time of our recurrent state at the first and the last length.

The ratios are performer-pytorch / ours (above 1: ours is faster or smaller). performer-pytorch is
used only here; without it the comparison is skipped with a message and our numbers are printed.

    python tests/benchmarks/bench_performer_model.py [--lengths 1024 2048 4096] [--runs 5]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from bench_performer import cpu_name, median_time  # noqa: E402

from model_foundry import create_model  # noqa: E402
from model_foundry.config import load_model_config  # noqa: E402

D_MODEL, HEADS, FEATURES = 512, 8, 256


def ours(causal: bool) -> torch.nn.Module:
    role = "decoder" if causal else "encoder"
    block = {
        "d_model": D_MODEL, "num_layers": 1, "num_heads": HEADS, "d_ff": 4, "dropout": 0.0,
        "attention_type": "causal_linear" if causal else "linear", "activation": "GELU",
        "nb_features": FEATURES, "position_encoding": "none",
    }
    return create_model(load_model_config({"architecture": "performer", "model_type": role, role: block}))


def theirs(causal: bool) -> torch.nn.Module | None:
    try:
        from performer_pytorch import Performer
    except ImportError:
        return None
    return Performer(
        dim=D_MODEL, depth=1, heads=HEADS, dim_head=D_MODEL // HEADS, causal=causal, ff_mult=4,
        nb_features=FEATURES, feature_redraw_interval=1000,
    )


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward during one forward pass (each storage once, weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x.requires_grad_())
    return sum(storages.values())


def measure(model: torch.nn.Module, n: int, runs: int) -> dict[str, float]:
    model.train()
    x = torch.randn(1, n, D_MODEL)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        model(x.requires_grad_()).sum().backward()

    return {
        "forward": median_time(forward, runs),
        "forward_backward": median_time(forward_backward, runs),
        "saved": saved_bytes(model, x),
    }


def token_seconds(lengths: list[int], runs: int) -> dict[int, float]:
    """Seconds per generated token after a prompt of each length, through the recurrent state."""
    config = load_model_config({
        "architecture": "performer", "model_type": "decoder", "vocab_size": 1000,
        "decoder": {"d_model": D_MODEL, "num_layers": 1, "num_heads": HEADS, "attention_type": "causal_linear",
                    "nb_features": FEATURES, "dropout": 0.0, "activation": "GELU"},
    })
    model = create_model(config).eval()
    out = {}
    with torch.no_grad():
        for n in lengths:
            _, state = model.next_token_logits(torch.randint(0, 1000, (1, n)))
            token = torch.randint(0, 1000, (1, 1))
            out[n] = median_time(lambda token=token, state=state: model.next_token_logits(token, state), runs * 10)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if theirs(False) is None:
        print("performer-pytorch is not installed: the side-by-side comparison is skipped "
              "(pip install 'foundry-plugin-performer[benchmark]'); our numbers only.")
    header = (f"{'mode':<14}{'n':>6} | {'fwd ms':>8} {'ref':>8} {'x':>6} | {'f+b ms':>8} {'ref':>8} {'x':>6} | "
              f"{'saved MiB':>9} {'ref':>8} {'x':>6}")
    print(f"one layer: d_model {D_MODEL}, {HEADS} heads, {FEATURES} features, batch 1, "
          f"{torch.get_num_threads()} thread, {cpu_name()}; ref = performer-pytorch, x = ref / ours")
    print(header)
    print("-" * len(header))
    for causal in (True, False):
        mode = "causal" if causal else "bidirectional"
        for n in args.lengths:
            mine = measure(ours(causal), n, args.runs)
            reference_model = theirs(causal)
            ref = measure(reference_model, n, args.runs) if reference_model is not None else None
            cells = []
            for key, scale in (("forward", 1e3), ("forward_backward", 1e3), ("saved", 2.0**-20)):
                value = mine[key] * scale
                if ref is None:
                    cells.append(f"{value:>8.1f} {'-':>8} {'-':>6}")
                else:
                    cells.append(f"{value:>8.1f} {ref[key] * scale:>8.1f} {ref[key] / mine[key]:>6.1f}")
            print(f"{mode:<14}{n:>6} | " + " | ".join(cells))
    per_token = token_seconds([args.lengths[0], args.lengths[-1]], args.runs)
    first, last = per_token[args.lengths[0]], per_token[args.lengths[-1]]
    print(f"\ngeneration, ms per token after {args.lengths[0]} / {args.lengths[-1]} tokens: "
          f"{first * 1e3:.2f} / {last * 1e3:.2f} (ratio {last / first:.2f}; flat means constant time per token)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
