"""Per-step time of the VAE architectures under ``foundry train`` against a plain PyTorch loop on the
same modules and batches (goal: <= 5 % overhead), and of pythae's VAE on the same networks.

The two loops are the core's (``tests/benchmarks/bench_train_overhead.py``): the same examples in
the same order through the same collator, the same AdamW groups, schedule and clipping; the plain
loop is ``forward; backward; clip; step; zero_grad``. The two loops alternate, one round each per
``--runs``; reported are the fastest run of each (other jobs on a shared machine only ever add
time) and the median of the rounds' paired ratios (``foundry train`` / plain loop of the same
round), which holds up better when other jobs share the machine; the goal is judged on the median.
One thread.

pythae (``pip install pythae``; it is not a dependency of this plugin) trains its ``VAE`` model with
the encoder and decoder modules of ``configs/vae.yaml`` wrapped in its ``BaseEncoder`` /
``BaseDecoder``, on the same batches, in the same plain loop: its step is its model's forward
(reparameterisation, MSE reconstruction, closed-form KL), backward and AdamW step.

    python plugins/foundry-plugin-vae/tests/benchmarks/bench_vae_step.py [--runs 3] [--steps 400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "benchmarks"))

from bench_train_overhead import (  # noqa: E402
    alternating_rounds,
    paired_ratio,
    plain_step,
    timing_overrides,
)

from model_foundry.config import load_config  # noqa: E402
from model_foundry.datasets import DataContext, load_data  # noqa: E402
from model_foundry.evaluation import make_collator  # noqa: E402
from model_foundry.factory import create_model  # noqa: E402
from model_foundry.training.loop import BlockOrder, collate  # noqa: E402

ARCHITECTURES = ("vae", "beta_vae", "conditional_vae", "vq_vae")
GOAL = 0.05


def pythae_step_seconds(config, dataset, steps: int, warmup: int) -> float | None:
    """pythae's VAE on the encoder and decoder of ``config``'s model, in the plain loop; None without pythae."""
    try:
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except ImportError:
        return None
    torch.manual_seed(config.training.seed)
    ours = create_model(config.model)
    latent = ours.latent_dim

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.network = ours.encoder

        def forward(self, x):
            mean, logvar = self.network(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.network = ours.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=self.network(z))

    model = VAE(VAEConfig(input_dim=tuple(ours.data_shape), latent_dim=latent, reconstruction_loss="mse"),
                encoder=Encoder(), decoder=Decoder())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.training.learning_rate)
    order = BlockOrder(len(dataset), config.training.batch_size, config.training.seed, 0, 1)
    collator = make_collator(config.training, config.model, config.data.params, "image", None, torch.Generator())
    for number in range(steps):
        if number == warmup:
            started = time.perf_counter()
        batch = collate(collator, dataset, order.indices(number), torch.device("cpu"))
        model({"data": batch["pixel_values"]}).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / (steps - warmup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scratch = tempfile.mkdtemp(prefix="bench-vae-")
    rows, met = [], True
    try:
        for architecture in ARCHITECTURES:
            path = os.path.join(ROOT, "configs", f"{architecture}.yaml")
            config = load_config(path, timing_overrides(scratch, args.steps, args.warmup))
            images = load_data(config.data, DataContext(f"{scratch}/cache")).train
            raw, ours = alternating_rounds(config, None, images, args.steps, args.warmup, plain_step, args.runs)
            overhead = min(ours) / min(raw) - 1
            ratio = paired_ratio(ours, raw)
            met &= ratio - 1 <= GOAL
            rows.append((architecture, min(raw), min(ours), overhead, ratio))
            print(f"[{architecture}] plain loop {min(raw) * 1e3:.3f} ms/step, foundry train {min(ours) * 1e3:.3f} ms/step, "
                  f"overhead {overhead * 100:+.1f}% (fastest), median paired ratio {ratio:.3f} (goal <= {1 + GOAL:.2f}); "
                  f"runs: plain {', '.join(f'{t * 1e3:.1f}' for t in raw)}, foundry {', '.join(f'{t * 1e3:.1f}' for t in ours)} ms",
                  flush=True)
            if architecture == "vae":
                pythae = [pythae_step_seconds(config, images, args.steps, args.warmup) for _ in range(args.runs)]
                if pythae[0] is None:
                    print("[pythae] not installed: pip install pythae to compare", flush=True)
                else:
                    print(f"[pythae] VAE on the same networks, plain loop: {min(pythae) * 1e3:.3f} ms/step "
                          f"({min(pythae) / min(raw):.2f}x the plain loop of ours)", flush=True)
        print("\n| architecture | plain PyTorch loop | foundry train | overhead (fastest) | median paired ratio |\n"
              "|---|---|---|---|---|")
        for architecture, raw_best, ours_best, overhead, ratio in rows:
            print(f"| `{architecture}` | {raw_best * 1e3:.3f} ms | {ours_best * 1e3:.3f} ms | {overhead * 100:+.1f} % "
                  f"| {ratio:.3f} |")
        return 0 if met else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
