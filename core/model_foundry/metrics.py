"""The core's evaluation metrics, registered through :func:`~model_foundry.hookspecs.foundry_metrics`.

Each is ``compute(model, dataset, context) -> dict[str, float]`` (see
:class:`~model_foundry.evaluation.MetricContext`); ``dataset`` is the validation split. Samples
are drawn in batches of ``context.batch_size`` on ``context.device`` from one generator seeded
with ``context.seed``, with the model in eval mode and no gradients, so that evaluations of the
same weights agree. See docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

    from model_foundry.datasets import Dataset
    from model_foundry.evaluation import MetricContext

DIGITS_CLASSIFIER = os.path.join(os.path.dirname(__file__), "assets", "digits_classifier.safetensors")
DIGITS_SHAPE = (1, 8, 8)


def digits_classifier() -> "torch.nn.Module":
    """A small MLP over 8x8 digits in [-1, 1]; ``features`` is its penultimate layer.

    Trained by ``assets/train_digits_classifier.py`` on the training split of the default
    ``digits`` data; its weights ship with the package."""
    from torch import nn

    class DigitsClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
            self.head = nn.Linear(64, 10)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(pixel_values))

    return DigitsClassifier()


@functools.lru_cache(maxsize=None)
def _loaded_classifier(device: str) -> "torch.nn.Module":
    from safetensors.torch import load_file

    model = digits_classifier()
    model.load_state_dict(load_file(DIGITS_CLASSIFIER))
    return model.to(device).eval()


@contextlib.contextmanager
def _inference(model: Any) -> Iterator[None]:
    """Eval mode and no gradients for the block; the model's mode is restored afterwards."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batches(dataset: "Dataset", batch_size: int, device: Any) -> Iterator[dict[str, Any]]:
    from model_foundry.evaluation import to_device

    for start in range(0, len(dataset), batch_size):
        yield to_device(dataset.batch(range(start, min(start + batch_size, len(dataset)))), device)


def input_key_of(model: Any) -> str:
    from model_foundry.errors import FoundryError
    from model_foundry.factory import modality_of
    from model_foundry.registry import get_registry, unique_entry

    spec = unique_entry(get_registry().modalities, modality_of(model.config), "modality")
    if isinstance(spec, str):
        raise FoundryError(spec)
    return spec.input_key


def draw_samples(model: Any, context: "MetricContext", num_samples: int) -> "torch.Tensor":
    """``num_samples`` samples in batches of ``context.batch_size`` from one generator seeded with
    ``context.seed`` on ``context.device``; a conditional model gets the labels ``0, 1, ...,
    num_classes - 1, 0, ...`` (``num_classes`` from the data's info). A model of a conditional
    architecture configured without classes (``model.num_classes`` None) gets no labels: it
    refuses them, as the protocol says."""
    import torch

    generator = torch.Generator(device=context.device).manual_seed(context.seed)
    num_classes = context.data_info.get("num_classes") if getattr(model, "num_classes", None) is not None else None
    chunks = []
    with _inference(model):
        for start in range(0, num_samples, context.batch_size):
            count = min(context.batch_size, num_samples - start)
            conditions = None
            if context.capabilities.conditional and num_classes:
                conditions = torch.arange(start, start + count, device=context.device) % num_classes
            with context.autocast():
                chunks.append(model.sample(count, generator=generator, conditions=conditions).float())
    return torch.cat(chunks)


# --- bits per dimension ------------------------------------------------------------------------


def bits_per_dim(model: Any, dataset: "Dataset", context: "MetricContext") -> dict[str, float]:
    """``-mean log_prob / (D ln 2)`` over the validation split, ``D`` the size of one example.

    ``log_prob`` is in nats per example, of the data as the batch holds it. For data quantised to
    ``levels`` values per dimension (``data_info["levels"]``: 256 for 8-bit images) scaled to
    [-1, 1], ``log((levels - 1) / 2)`` nats per dimension turn the density into one per
    intensity level, so the result is comparable with the literature's bits/dim of 8-bit data;
    for a model that dequantises (``likelihood="bound"``) it is an upper bound.
    """
    key = input_key_of(model)
    total, count, dims = 0.0, 0, 1
    with _inference(model):
        for batch in _batches(dataset, context.batch_size, context.device):
            total += float(model.log_prob(**batch).double().sum())
            count += batch[key].shape[0]
            dims = batch[key][0].numel()
    if not count:
        return {"bits_per_dim": float("nan")}
    nats_per_dim = -total / (count * dims)
    levels = context.data_info.get("levels")
    if levels:
        nats_per_dim += math.log((levels - 1) / 2)
    return {"bits_per_dim": nats_per_dim / math.log(2)}


# --- sample quality on digits ------------------------------------------------------------------


def digits_features(images: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    """The digits classifier's penultimate-layer features and class probabilities of 8x8 images in [-1, 1]."""
    import torch

    classifier = _loaded_classifier(str(images.device))
    with torch.no_grad():
        features = classifier.features(images.float())
        return features, classifier.head(features).softmax(-1)


def frechet_distance(a: "torch.Tensor", b: "torch.Tensor") -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features (rows), in float64:
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``."""
    import torch

    a, b = a.double(), b.double()
    cov_a, cov_b = torch.atleast_2d(torch.cov(a.T)), torch.atleast_2d(torch.cov(b.T))
    # The symmetric form keeps the matrix square root real and exact where sqrtm(S_a S_b) is not.
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def class_probability_score(probabilities: "torch.Tensor") -> float:
    """``exp(E_x[KL(p(y|x) || p(y))])`` (the Inception score's form): from 1 to the number of classes."""
    p = probabilities.double()
    marginal = p.mean(0)
    return math.exp(float((p * (p.clamp_min(1e-30).log() - marginal.clamp_min(1e-30).log())).sum(1).mean()))


def digits_sample_quality(model: Any, dataset: "Dataset", context: "MetricContext") -> dict[str, float]:
    """``digits_fid``: the Fréchet distance between the digits classifier's features of
    ``context.num_samples`` model samples and of the validation split; ``digits_score``: the
    class-probability score of the samples. For 1x8x8 images only; other shapes are skipped."""
    import torch

    key = input_key_of(model)
    held_out = torch.cat([batch[key] for batch in _batches(dataset, context.batch_size, context.device)])
    if tuple(held_out.shape[1:]) != DIGITS_SHAPE:
        warnings.warn(f"digits_fid and digits_score need {DIGITS_SHAPE} images, and these are "
                      f"{tuple(held_out.shape[1:])}; skipped", stacklevel=2)
        return {}
    samples = draw_samples(model, context, context.num_samples)
    real_features, _ = digits_features(held_out)
    sample_features, sample_probabilities = digits_features(samples)
    return {
        "digits_fid": frechet_distance(sample_features, real_features),
        "digits_score": class_probability_score(sample_probabilities),
    }
