"""Quality runs of the energy-based models (run by tests/benchmarks/generative_quality.py).

On the 2-D toy sets the samples are compared with the held-out split by the maximum mean
discrepancy (MMD², unbiased, a sum of Gaussian kernels of bandwidths 0.1, 0.3, 1 and 3), next
to the MMD² between the held-out split and fresh data from the same distribution (what a
perfect sampler scores); modes are counted by the label of each sample's nearest held-out
point, among samples within 0.5 of one (the rest are off the data). On digits: the core's
digits score and Fréchet distance of `foundry eval`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

FAMILY = "Energy-based"
NUM_SAMPLES = 1000
BANDWIDTHS = (0.1, 0.3, 1.0, 3.0)
NEAR = 0.5  # a sample farther than this from every held-out point is off the data
NO_EVALUATION = "training.eval_every=0"  # measured once, after training: CPU minutes are training's own


def mmd_squared(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD² between samples ``a`` (N, D) and ``b`` (M, D) under a sum of Gaussian kernels."""
    a, b = a.double(), b.double()

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(x, y).square()
        return sum(torch.exp(-distances / (2 * width**2)) for width in BANDWIDTHS)

    def within(x: torch.Tensor) -> float:
        matrix = kernel(x, x)
        return float((matrix.sum() - matrix.diagonal().sum()) / (len(x) * (len(x) - 1)))

    return within(a) + within(b) - 2 * float(kernel(a, b).mean())


def held_out_and_fresh(checkpoint) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The run's validation points and labels, fresh points of the same distribution (another seed),
    and the number of modes."""
    import attrs

    from model_foundry.config import load_config
    from model_foundry.datasets import DataContext, load_data
    from model_foundry.datasets.vectors import NUM_CLASSES, toy_points

    section = load_config(checkpoint / "config.yaml", sections=("data",)).data
    data = load_data(section, DataContext(cache_dir=str(checkpoint / "cache")))
    split = data.validation.batch(range(len(data.validation)))
    fresh, _ = toy_points(attrs.evolve(section.params, seed=section.params.seed + 1, num_samples=len(data.validation)))
    return split["vectors"], split["class_labels"], torch.from_numpy(fresh), NUM_CLASSES[section.params.name]


def measure_toy(bench, config: str) -> dict:
    import model_foundry

    run = bench.train(config, NO_EVALUATION)
    model = model_foundry.load(str(run.checkpoint)).eval()
    start = time.process_time()
    samples = model.sample(NUM_SAMPLES, generator=torch.Generator().manual_seed(0))
    sampling_seconds = time.process_time() - start
    held_out, labels, fresh, modes = held_out_and_fresh(run.checkpoint)
    distances = torch.cdist(samples.double(), held_out.double())
    nearest, index = distances.min(dim=1)
    near = nearest < NEAR
    shares = np.bincount(labels[index[near]].numpy(), minlength=modes) / NUM_SAMPLES
    return {
        "parameters": run.parameters,
        "CPU minutes": round(run.cpu_minutes, 2),
        "MMD² samples vs held-out": mmd_squared(samples, held_out),
        "MMD² fresh data vs held-out": mmd_squared(fresh, held_out),
        "modes covered": f"{int((shares >= 0.2 / modes).sum())}/{modes}",
        "smallest mode share": float(shares.min()),
        "off the data": float(1 - near.float().mean()),
        f"CPU s per {NUM_SAMPLES} samples": round(sampling_seconds, 2),
        "samples": bench.sample_picture(run, run.name, num_samples=NUM_SAMPLES),
    }


def measure_digits(bench, config: str) -> dict:
    run = bench.train(config, NO_EVALUATION)
    metrics = bench.evaluate(run, "--num-samples", str(NUM_SAMPLES))
    return {
        "parameters": run.parameters,
        "CPU minutes": round(run.cpu_minutes, 2),
        "digits score": metrics["digits_score"],
        "digits Fréchet distance": metrics["digits_fid"],
        "samples": bench.sample_picture(run, run.name, num_samples=64),
    }


RUNS = {
    "ebm-8gaussians": lambda bench: measure_toy(bench, "configs/ebm-8gaussians.yaml"),
    "ebm-moons": lambda bench: measure_toy(bench, "configs/ebm-moons.yaml"),
    "deep_ebm-8gaussians": lambda bench: measure_toy(bench, "configs/deep_ebm-8gaussians.yaml"),
    "deep_ebm-moons": lambda bench: measure_toy(bench, "configs/deep_ebm-moons.yaml"),
    "ebm-digits": lambda bench: measure_digits(bench, "configs/ebm-digits.yaml"),
    "deep_ebm-digits": lambda bench: measure_digits(bench, "configs/deep_ebm-digits.yaml"),
}
