"""Quality runs of the autoregressive plugin, for ``tests/benchmarks/generative_quality.py``.

- ``pixelcnn``, ``transformer``: configs/pixelcnn.yaml (gated) and configs/transformer.yaml on the
  digits; bits/dim on the validation split (17 levels, ``-log2 P`` per pixel) and the digits score
  and Fréchet distance of 1000 samples, by ``foundry eval``.
- ``independent-pixels``, ``linear-autoregressive``: the two reference models on the same split,
  fitted here on the training split: one categorical per pixel (add-one counts), and a softmax
  over each pixel's 17 levels that is linear in the pixels before it in raster order.
- ``wavenet``: configs/wavenet.yaml on the synthetic tones and chirps; bits per sample (``-log2 P``
  of the mu-law codes) on the validation split against a linear predictor of order
  ``LINEAR_ORDER`` on the same codes (least squares on the training split, Gaussian residual
  integrated over each code's mu-law bin); two generated clips as WAV.
- ``wavenet-generation``: the WaveNet of configs/wavenet.yaml generating 4096 samples with its
  per-layer cache against full recomputation of the prefix for every sample: samples per CPU
  second (medians of alternating rounds), the ratio, and how many samples both drew the same (float32:
  a uniform within rounding of a CDF boundary can flip one draw, and the clips part from there).

Every time is process CPU time on one thread (the machine is shared).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

FAMILY = "Autoregressive"
DIGITS_LEVELS = 17
LINEAR_ORDER = 32
GENERATED = 4096
GENERATION_ROUNDS = 2  # a recomputed clip of 4096 samples costs minutes of CPU
SCORED_SAMPLES = 1000


def _cpu_seconds(function: Any) -> tuple[Any, float]:
    start = time.process_time()
    result = function()
    return result, time.process_time() - start


def _splits(data: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The training and validation splits of a run's data, each as one batch."""
    return data.train.batch(range(len(data.train))), data.validation.batch(range(len(data.validation)))


def _measure_digits_model(bench: Any, config: str) -> dict[str, Any]:
    run = bench.train(config, "training.eval_every=0")
    metrics = bench.evaluate(run, "--num-samples", str(SCORED_SAMPLES))
    return {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes, "bits/dim": metrics["bits_per_dim"],
        "score": metrics["digits_score"], "Fréchet": metrics["digits_fid"],
        "samples": bench.sample_picture(run, Path(config).stem),
    }


def measure_pixelcnn(bench: Any) -> dict[str, Any]:
    return _measure_digits_model(bench, "configs/pixelcnn.yaml")


def measure_transformer(bench: Any) -> dict[str, Any]:
    return _measure_digits_model(bench, "configs/transformer.yaml")


# --- the digits' reference models ----------------------------------------------------------------


def _digit_codes(bench: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 64) integer levels of the training and validation digits of configs/pixelcnn.yaml's split."""
    root = Path(__file__).resolve().parents[4]
    train, validation = _splits(bench.data(root / "configs" / "pixelcnn.yaml"))
    return tuple(torch.round((split["pixel_values"].flatten(1) + 1) * (DIGITS_LEVELS - 1) / 2).long()
                 for split in (train, validation))


def _score(bench: Any, codes: torch.Tensor) -> tuple[float, float]:
    """The digits score and Fréchet distance of sampled codes (N, 64) against the validation digits."""
    from model_foundry.metrics import class_probability_score, digits_features, frechet_distance

    _, validation = _digit_codes(bench)

    def images(c: torch.Tensor) -> torch.Tensor:
        return (c.float() * 2 / (DIGITS_LEVELS - 1) - 1).view(-1, 1, 8, 8)

    features, probabilities = digits_features(images(codes))
    real, _ = digits_features(images(validation))
    return class_probability_score(probabilities), frechet_distance(features, real)


def measure_independent_pixels(bench: Any) -> dict[str, Any]:
    torch.set_num_threads(1)
    train, validation = _digit_codes(bench)
    (counts, cpu) = _cpu_seconds(lambda: torch.nn.functional.one_hot(train, DIGITS_LEVELS).sum(0).double() + 1)
    log_p = (counts / counts.sum(-1, keepdim=True)).log()  # (64, levels)
    bits = float(-log_p.gather(1, validation.T).mean() / math.log(2))
    samples = torch.multinomial(log_p.exp(), SCORED_SAMPLES, replacement=True, generator=torch.Generator().manual_seed(0)).T
    score, frechet = _score(bench, samples)
    return {"parameters": 64 * (DIGITS_LEVELS - 1), "CPU minutes": cpu / 60, "bits/dim": bits, "score": score,
            "Fréchet": frechet}


class LinearAutoregressive(torch.nn.Module):
    """logits of pixel d = b_d + W_d x_{<d}: a softmax over 17 levels, linear in the earlier pixels' values."""

    def __init__(self, dims: int = 64, levels: int = DIGITS_LEVELS):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(dims, dims, levels))
        self.bias = torch.nn.Parameter(torch.zeros(dims, levels))
        self.register_buffer("mask", torch.ones(dims, dims).tril(-1)[:, :, None])

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        values = codes.float() * 2 / (DIGITS_LEVELS - 1) - 1
        return torch.einsum("ne,dek->ndk", values, self.weight * self.mask) + self.bias

    def bits(self, codes: torch.Tensor) -> torch.Tensor:
        return -self.logits(codes).log_softmax(-1).gather(-1, codes[..., None]).mean() / math.log(2)


def measure_linear_autoregressive(bench: Any) -> dict[str, Any]:
    torch.set_num_threads(1)
    train, validation = _digit_codes(bench)
    torch.manual_seed(0)
    model = LinearAutoregressive()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)

    def fit() -> None:
        for _ in range(400):  # full batch; a little L2 keeps 70k weights from memorising 1438 digits
            loss = model.bits(train) + 1e-3 * model.weight.square().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    _, cpu = _cpu_seconds(fit)
    with torch.no_grad():
        bits = float(model.bits(validation))
        generator = torch.Generator().manual_seed(0)
        samples = torch.zeros(SCORED_SAMPLES, 64, dtype=torch.long)
        for d in range(64):
            samples[:, d] = torch.multinomial(model.logits(samples)[:, d].softmax(-1), 1, generator=generator)[:, 0]
    score, frechet = _score(bench, samples)
    return {"parameters": 64 * 63 // 2 * DIGITS_LEVELS + 64 * DIGITS_LEVELS, "CPU minutes": cpu / 60,
            "bits/dim": bits, "score": score, "Fréchet": frechet}


# --- WaveNet ---------------------------------------------------------------------------------------


def linear_predictor_bits(train: torch.Tensor, validation: torch.Tensor, mu_law: Any, order: int = LINEAR_ORDER) -> float:
    """Bits per sample of the validation codes under a linear predictor of the next dequantised code from
    the ``order`` before it (least squares on the training clips) with a Gaussian residual integrated
    over each code's mu-law bin (the outer bins reach to infinity). The first ``order`` samples of a clip
    are not scored."""
    def design(clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = mu_law.values(mu_law.codes(clips)).double()
        past = torch.stack([x[:, order - 1 - k : x.shape[1] - 1 - k] for k in range(order)], -1).reshape(-1, order)
        return torch.cat([past, torch.ones(len(past), 1, dtype=past.dtype)], 1), x[:, order:].reshape(-1)

    past, target = design(train)
    weights = torch.linalg.lstsq(past, target[:, None]).solution
    sigma = float((past @ weights - target[:, None]).std())
    past, target = design(validation)
    codes = mu_law.codes(target)
    centre = codes.double() * 2 / mu_law.mu - 1
    low = torch.where(codes == 0, -math.inf, mu_law.expand(centre - 1 / mu_law.mu))
    high = torch.where(codes == mu_law.mu, math.inf, mu_law.expand(centre + 1 / mu_law.mu))
    normal = torch.distributions.Normal((past @ weights)[:, 0], sigma)
    return float(-(normal.cdf(high) - normal.cdf(low)).clamp_min(1e-300).log2().mean())


def measure_wavenet(bench: Any) -> dict[str, Any]:
    torch.set_num_threads(1)
    run = bench.train("configs/wavenet.yaml", "training.eval_every=0")
    opened, data = bench.load(run.checkpoint)
    model, (train, validation) = opened.model, _splits(data)
    clips, labels = validation["input_values"], validation["class_labels"]
    with torch.no_grad():
        bits = float(-model.log_pmf(input_values=clips, class_labels=labels).double().mean() / clips.shape[1] / math.log(2))
    return {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes, "receptive field": model.receptive_field,
        "bits/sample": bits,
        f"linear predictor (order {LINEAR_ORDER}) bits/sample": linear_predictor_bits(train["input_values"], clips, model.mu_law),
        "samples": bench.sample_picture(run, "wavenet", num_samples=2),
    }


def measure_wavenet_generation(bench: Any) -> dict[str, Any]:
    """The model of configs/wavenet.yaml, seeded (its weights do not change the time a sample costs);
    ``GENERATION_ROUNDS`` rounds, each timing both ways, in alternating order; the medians count."""
    from model_foundry import create_model
    from model_foundry.config import load_config

    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[4]
    torch.manual_seed(0)
    model = create_model(load_config(root / "configs" / "wavenet.yaml", sections=("model",)).model).eval()

    def generate(cached: bool) -> torch.Tensor:
        return model.sample(1, generator=torch.Generator().manual_seed(0), conditions=torch.tensor([1]),
                            length=GENERATED, cached=cached)

    seconds: dict[bool, list[float]] = {True: [], False: []}
    clips: dict[bool, torch.Tensor] = {}
    for round_ in range(GENERATION_ROUNDS):
        for cached in (True, False) if round_ % 2 == 0 else (False, True):
            clips[cached], cpu = _cpu_seconds(lambda cached=cached: generate(cached))
            seconds[cached].append(cpu)
    cached_seconds, naive_seconds = statistics.median(seconds[True]), statistics.median(seconds[False])
    return {
        "parameters": model.num_parameters(), "receptive field": model.receptive_field,
        "cached samples/s": GENERATED / cached_seconds, "recomputed samples/s": GENERATED / naive_seconds,
        "speed-up": naive_seconds / cached_seconds,
        "speed-up per round": " ".join(f"{n / c:.1f}x" for c, n in zip(seconds[True], seconds[False], strict=True)),
        "same samples": _agreement(clips[True], clips[False]),
    }


def _agreement(cached: torch.Tensor, recomputed: torch.Tensor) -> str:
    """The samples the two clips agree on: "all N", or "first K of N" (those before the first that differs)."""
    differing = (cached != recomputed).flatten().nonzero()
    return f"all {cached.numel()}" if len(differing) == 0 else f"first {int(differing[0])} of {cached.numel()}"


RUNS = {
    "pixelcnn": measure_pixelcnn,
    "transformer": measure_transformer,
    "independent-pixels": measure_independent_pixels,
    "linear-autoregressive": measure_linear_autoregressive,
    "wavenet": measure_wavenet,
    "wavenet-generation": measure_wavenet_generation,
}
