"""Quality runs of the VAE plugin, for ``tests/benchmarks/generative_quality.py``.

Each run trains ``configs/<architecture>.yaml`` on the digits and reports, on the run's own
validation split: the bits/dim bound ``foundry eval`` measures (an importance-weighted bound with
64 samples for the Gaussian VAEs; log p(x|codes) + log p(codes) for the VQ-VAE) beside the
independent-pixel baseline (a categorical distribution over the 17 grey levels per pixel, fitted
to the same training split with add-one smoothing), and the digits score and Fréchet distance of
1000 samples. The conditional VAE also reports how often the digits classifier agrees with the
class it was asked for, over 100 samples of each digit.
"""

from __future__ import annotations

import math
from typing import Any

import torch

FAMILY = "VAE"
PER_CLASS = 100


def independent_pixel_bits_per_dim(train: torch.Tensor, validation: torch.Tensor, levels: int) -> float:
    """Bits/dim on ``validation`` of one categorical distribution per pixel over ``levels`` values in
    [-1, 1], fitted to ``train`` with add-one smoothing."""
    def bins(images: torch.Tensor) -> torch.Tensor:
        return torch.round((images.flatten(1) + 1) * (levels - 1) / 2).long()

    train_bins, validation_bins = bins(train), bins(validation)
    counts = torch.ones(train_bins.size(1), levels)
    counts.scatter_add_(1, train_bins.T, torch.ones_like(train_bins.T, dtype=torch.float))
    log_probabilities = (counts / counts.sum(1, keepdim=True)).log()
    chosen = log_probabilities.gather(1, validation_bins.T)  # (pixels, examples)
    return float(-chosen.mean() / math.log(2))


def _measure(bench: Any, architecture: str, conditional: bool = False) -> dict[str, Any]:
    torch.set_num_threads(1)
    return measure_run(bench, bench.train(f"configs/{architecture}.yaml"), architecture, conditional)


def measure_run(bench: Any, run: Any, architecture: str, conditional: bool = False) -> dict[str, Any]:
    """The row of a trained run (``bench.train``'s result)."""
    metrics = bench.evaluate(run, "--num-samples", "1000")
    opened, data = bench.load(run.checkpoint)
    model = opened.model
    key = "pixel_values"
    train = data.train.batch(range(len(data.train)))[key]
    validation = data.validation.batch(range(len(data.validation)))[key]
    row = {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes,
        "score": metrics["digits_score"], "Fréchet": metrics["digits_fid"],
        "bits/dim (bound)": metrics["bits_per_dim"],
        "independent-pixel bits/dim": independent_pixel_bits_per_dim(torch.as_tensor(train), torch.as_tensor(validation), 17),
    }
    if conditional:
        from model_foundry.metrics import digits_features

        conditions = torch.arange(10).repeat_interleave(PER_CLASS)
        with torch.no_grad():
            samples = model.sample(len(conditions), generator=torch.Generator().manual_seed(0), conditions=conditions)
        _, probabilities = digits_features(samples)
        row["class agreement"] = float((probabilities.argmax(-1) == conditions).float().mean())
        row["samples"] = " ".join(bench.sample_picture(run, f"{architecture}-{digit}", num_samples=16, condition=digit)
                                  for digit in (0, 3, 7))
    else:
        row["samples"] = bench.sample_picture(run, architecture)
    return row


def measure_vae(bench: Any) -> dict[str, Any]:
    return _measure(bench, "vae")


def measure_beta_vae(bench: Any) -> dict[str, Any]:
    return _measure(bench, "beta_vae")


def measure_conditional_vae(bench: Any) -> dict[str, Any]:
    return _measure(bench, "conditional_vae", conditional=True)


def measure_vq_vae(bench: Any) -> dict[str, Any]:
    return _measure(bench, "vq_vae")


RUNS = {"vae": measure_vae, "beta_vae": measure_beta_vae, "conditional_vae": measure_conditional_vae, "vq_vae": measure_vq_vae}
