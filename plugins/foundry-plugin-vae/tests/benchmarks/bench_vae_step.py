"""Per-step time of the VAE architectures under ``foundry train`` against a plain PyTorch loop on the
same modules and batches (goal: <= 5 % overhead), and of pythae's VAE on the same networks.

The two loops are the core's (``tests/benchmarks/bench_train_overhead.py``): the same examples in
the same order through the same collator, the same AdamW groups, schedule and clipping; the plain
loop is ``forward; backward; clip; step; zero_grad``. The two loops run in one process in turns of
one step, each step timed (why: the core benchmark's docstring); a loop's time per step is its mean
over the steps after the first ``--warmup`` of ``--runs`` runs, and the goal is judged on the
ratio of the two. One thread.

pythae (``pip install pythae``; it is not a dependency of this plugin) trains its ``VAE`` model with
the encoder and decoder modules of ``configs/vae.yaml`` wrapped in its ``BaseEncoder`` /
``BaseDecoder``, on the same batches, as the step of the plain loop: its model's forward
(reparameterisation, MSE reconstruction, closed-form KL), backward, clipping and AdamW step. It
takes turns with ``foundry train`` of ``vae`` the same way.

    python plugins/foundry-plugin-vae/tests/benchmarks/bench_vae_step.py [--runs 3] [--steps 400]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "benchmarks"))

from bench_train_overhead import (  # noqa: E402
    interleaved_runs,
    mean_ms,
    overhead_ratio,
    overhead_table,
    plain_step,
    timing_overrides,
)

from model_foundry.config import load_config  # noqa: E402
from model_foundry.datasets import DataContext, load_data  # noqa: E402

ARCHITECTURES = ("vae", "beta_vae", "conditional_vae", "vq_vae")
GOAL = 0.05


def pythae_step():
    """A plain-loop step that trains pythae's VAE on the model's encoder and decoder; None without pythae."""
    try:
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
    except ImportError:
        return None

    class Encoder(BaseEncoder):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, x):
            mean, logvar = self.network(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, z):
            return ModelOutput(reconstruction=self.network(z))

    wrapped = {}

    def step(ours, batch, optimizers, max_grad_norm=1.0):
        if ours not in wrapped:  # the optimizer already holds the shared encoder and decoder parameters
            pythae_config = VAEConfig(input_dim=tuple(ours.data_shape), latent_dim=ours.latent_dim, reconstruction_loss="mse")
            wrapped[ours] = VAE(pythae_config, encoder=Encoder(ours.encoder), decoder=Decoder(ours.decoder)).train()
        model = wrapped[ours]
        (optimizer,) = optimizers.values()
        model({"data": batch["pixel_values"]}).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


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
            print(f"{architecture}: {args.runs} runs of {args.steps} steps ({args.warmup} untimed)", flush=True)
            plain, ours = interleaved_runs(config, None, images, args.steps, args.warmup, plain_step, args.runs)
            ratio = overhead_ratio(ours, plain)
            met &= ratio - 1 <= GOAL
            rows.append((f"`{architecture}`", plain, ours))
            print(f"[{architecture}] plain loop {mean_ms(plain)}, foundry train {mean_ms(ours)}, ratio {ratio:.3f} "
                  f"(goal <= {1 + GOAL:.2f})", flush=True)
            if architecture == "vae":
                step = pythae_step()
                if step is None:
                    print("[pythae] not installed: pip install pythae to compare", flush=True)
                    continue
                plain, ours = interleaved_runs(config, None, images, args.steps, args.warmup, step, args.runs)
                rows.append(("`vae` against pythae's `VAE` step in the plain loop", plain, ours))
                print(f"[pythae] plain loop with pythae's VAE step {mean_ms(plain)}, foundry train of vae {mean_ms(ours)}",
                      flush=True)
        print(f"\n{overhead_table(rows)}")
        return 0 if met else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
