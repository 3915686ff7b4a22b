"""Quality runs of the GAN family on the 8x8 digits (run by tests/benchmarks/generative_quality.py).

Each architecture trains from its config in configs/ (one thread), and is scored by
`foundry eval` on 1000 samples: the digits classifier's score (real held-out digits about
8.5, one Gaussian about 4.3; goal >= 6.5) and the Fréchet distance of its features to the
validation split. The sample grid is 64 samples drawn with seed 0 (EMA weights).
"""

from __future__ import annotations

FAMILY = "GAN"
GOAL = 6.5


def measure(architecture: str):
    def run(bench) -> dict:
        trained = bench.train(f"configs/{architecture}.yaml")
        metrics = bench.evaluate(trained, "--num-samples", "1000")
        return {
            "parameters": trained.parameters,
            "CPU minutes": trained.cpu_minutes,
            "digits score (1000 samples)": metrics["digits_score"],
            "Fréchet distance": metrics["digits_fid"],
            f"score >= {GOAL}": "yes" if metrics["digits_score"] >= GOAL else "no",
            "samples": bench.sample_picture(trained, architecture),
        }

    return run


RUNS = {architecture: measure(architecture) for architecture in ("gan", "dcgan", "wgan", "lsgan")}
