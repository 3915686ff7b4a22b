"""The core's metrics: bits per dimension, and sample quality on digits (Fréchet distance and
class-probability score of a small classifier's outputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussian_toy_plugin import PLUGIN, GaussianToyConfig

from model_foundry.datasets import DataContext
from model_foundry.datasets.arrays import ArrayDataset
from model_foundry.datasets.config import DigitsDataConfig
from model_foundry.datasets.images import load_digits
from model_foundry.evaluation import MetricContext, applicable_metrics
from model_foundry.factory import create_model
from model_foundry.metrics import (
    bits_per_dim,
    class_probability_score,
    digits_features,
    digits_sample_quality,
    draw_samples,
    frechet_distance,
)
from model_foundry.records import Capabilities

CAPABILITIES = Capabilities(modality="image", sampling=True, likelihood="exact")


@pytest.fixture
def registry(foundry_registry):
    return foundry_registry(PLUGIN)


@pytest.fixture(scope="module")
def digits():
    data = load_digits(DigitsDataConfig(), DataContext(cache_dir=""))
    return data, data.train.batch(range(len(data.train)))["pixel_values"]


def context(**changes):
    return MetricContext(**{"device": "cpu", "capabilities": CAPABILITIES, "batch_size": 7, **changes})


def fitted_gaussian(images):
    """One full-covariance Gaussian fitted to ``images`` (maximum likelihood, a little jitter)."""
    model = create_model(GaussianToyConfig(shape=list(images.shape[1:])))
    flat = images.flatten(1).double()
    covariance = torch.cov(flat.T, correction=0) + 1e-6 * torch.eye(flat.shape[1], dtype=torch.float64)
    with torch.no_grad():
        model.loc.copy_(flat.mean(0))
        model.scale_tril.copy_(torch.linalg.cholesky(covariance))
    return model


# --- bits per dimension ------------------------------------------------------------------------


def test_bits_per_dim_of_a_standard_normal_is_the_closed_form(registry):
    model = create_model(GaussianToyConfig(shape=[1, 2, 3]))  # loc 0, identity covariance
    x = np.random.default_rng(0).uniform(-1, 1, size=(20, 1, 2, 3)).astype(np.float32)
    dataset = ArrayDataset({"pixel_values": x, "class_labels": np.zeros(20, dtype=np.int64)})
    nats = 0.5 * float((x.astype(np.float64) ** 2).sum()) / (20 * 6) + 0.5 * math.log(2 * math.pi)
    assert bits_per_dim(model, dataset, context())["bits_per_dim"] == pytest.approx(nats / math.log(2), rel=1e-6)
    # 8-bit data scaled to [-1, 1]: log(127.5) nats per dimension more (a density per intensity level)
    eight_bit = bits_per_dim(model, dataset, context(data_info={"levels": 256}))["bits_per_dim"]
    assert eight_bit == pytest.approx((nats + math.log(127.5)) / math.log(2), rel=1e-6)
    assert model.training, "the model's mode is restored"


def test_bits_per_dim_of_a_fitted_gaussian_on_digits(registry, digits):
    data, train = digits
    model = fitted_gaussian(train)
    value = bits_per_dim(model, data.validation, context(batch_size=64, data_info=data.info))["bits_per_dim"]
    # per intensity level of 17: below the log2(17) = 4.09 bits of a uniform guess
    assert 0 < value < math.log2(17)


# --- sample quality ----------------------------------------------------------------------------


def test_frechet_distance_is_the_closed_form():
    a, b = torch.randn(500, 1, generator=torch.Generator().manual_seed(0)), torch.randn(400, 1) * 3 + 2
    expected = (a.double().mean() - b.double().mean()) ** 2 + (a.double().std() - b.double().std()) ** 2
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-9)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 5)), rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    cov_a, cov_b = np.cov(a.T), np.cov(b.T)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * scipy_linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0, abs=1e-9)


def test_class_probability_score_runs_from_one_to_the_number_of_classes():
    assert class_probability_score(torch.full((30, 10), 0.1)) == pytest.approx(1.0)
    assert class_probability_score(torch.eye(10).repeat(3, 1)) == pytest.approx(10.0)
    assert class_probability_score(torch.eye(10)[[3] * 30]) == pytest.approx(1.0)


def test_real_digits_score_high_and_a_fitted_gaussian_about_half(registry, digits):
    data, train = digits
    held_out = data.validation.batch(range(len(data.validation)))["pixel_values"]
    real_features, real_probabilities = digits_features(held_out)
    train_features, _ = digits_features(train)
    assert class_probability_score(real_probabilities) > 8

    metric_context = context(num_samples=1000, batch_size=256)
    quality = digits_sample_quality(fitted_gaussian(train), data.validation, metric_context)
    assert 3.5 < quality["digits_score"] < 5.5
    sample_features, sample_probabilities = digits_features(draw_samples(fitted_gaussian(train), metric_context, 1000))
    assert quality["digits_fid"] == pytest.approx(frechet_distance(sample_features, real_features))
    assert quality["digits_score"] == pytest.approx(class_probability_score(sample_probabilities))
    gaussian_features, _ = digits_features(fitted_gaussian(train).sample(1000, generator=torch.Generator().manual_seed(0)))
    # measured: 1.6 for held-out digits, 4.6 for the Gaussian's samples (whose pixel means and
    # covariances are the digits' own, so only the features' non-linearity tells them apart)
    real_fid = frechet_distance(real_features, train_features)
    assert 2.5 * real_fid < frechet_distance(gaussian_features, train_features)
    assert quality["digits_fid"] > 2.5 * real_fid


def test_sample_quality_is_reproducible_under_the_context_seed(registry, digits):
    data, train = digits
    model = fitted_gaussian(train)
    first = digits_sample_quality(model, data.validation, context(num_samples=200, batch_size=64, seed=3))
    again = digits_sample_quality(model, data.validation, context(num_samples=200, batch_size=64, seed=3))
    other = digits_sample_quality(model, data.validation, context(num_samples=200, batch_size=64, seed=4))
    assert first == again and first != other


def test_draw_samples_batches_and_counts(registry):
    model = create_model(GaussianToyConfig(shape=[1, 2, 2]))
    samples = draw_samples(model, context(batch_size=4, seed=1), 10)
    assert samples.shape == (10, 1, 2, 2)
    assert torch.equal(samples, draw_samples(model, context(batch_size=4, seed=1), 10))
    assert not torch.equal(samples[:4], samples[4:8]), "one generator runs through all batches"
    assert model.training

    seen = []
    sample = model.sample

    def watched(*args, **kwargs):
        seen.append((model.training, torch.is_grad_enabled()))
        return sample(*args, **kwargs)

    model.sample = watched
    draw_samples(model, context(batch_size=4), 6)
    assert seen == [(False, False), (False, False)], "samples are drawn in eval mode without gradients"


def test_draw_samples_conditions_only_a_model_configured_with_classes(registry):
    import attrs

    model = create_model(GaussianToyConfig(shape=[1, 2, 2]))
    seen = []
    sample = model.sample
    model.sample = lambda count, generator=None, conditions=None: seen.append(conditions) or sample(count, generator=generator)
    conditional = context(batch_size=4, data_info={"num_classes": 3},
                          capabilities=attrs.evolve(CAPABILITIES, conditional=True))
    draw_samples(model, conditional, 6)  # num_classes None: unconditional as configured
    model.num_classes = 3
    draw_samples(model, conditional, 6)
    assert seen[:2] == [None, None] and [s.tolist() for s in seen[2:]] == [[0, 1, 2, 0], [1, 2]]


def test_sample_quality_skips_images_that_are_not_digits_shaped(registry):
    model = create_model(GaussianToyConfig(shape=[1, 2, 2]))
    dataset = ArrayDataset({"pixel_values": np.zeros((5, 1, 2, 2), dtype=np.float32)})
    with pytest.warns(UserWarning, match=r"need \(1, 8, 8\) images.*\(1, 2, 2\); skipped"):
        assert digits_sample_quality(model, dataset, context(num_samples=10)) == {}


def test_metrics_are_registered_for_the_right_data_and_capabilities(registry):
    image = [spec.name for spec in applicable_metrics("image", CAPABILITIES)]
    assert "bits_per_dim" in image and "digits_sample_quality" in image
    assert "perplexity" not in image
    vector = [spec.name for spec in applicable_metrics("vector", Capabilities(modality="vector", likelihood="bound"))]
    assert "bits_per_dim" in vector and "digits_sample_quality" not in vector
    assert "bits_per_dim" not in [spec.name for spec in applicable_metrics("image", Capabilities(sampling=True))]
