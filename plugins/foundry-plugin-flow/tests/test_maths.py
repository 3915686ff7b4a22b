"""The flows' maths on tiny inputs: invertibility, every layer's log-determinant against autograd,
densities that integrate to one, and bits/dim against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from foundry_plugin_flow.model import (
    ActNorm,
    AffineCoupling,
    InvertibleConv1x1,
    LogitTransform,
    VariationalDequantizer,
    squeeze,
    standard_normal_log_prob,
    unsqueeze,
)

from model_foundry import create_model
from model_foundry.datasets.arrays import ArrayDataset
from model_foundry.evaluation import MetricContext
from model_foundry.metrics import bits_per_dim
from model_foundry.registry import get_registry

IMAGE_FLOWS = {
    "realnvp": {"flow_type": "realnvp", "mask": "alternate"},
    "realnvp-checkerboard": {"flow_type": "realnvp", "mask": "checkerboard"},
    "glow-lu": {"flow_type": "glow", "mask": "channel", "lu_decomposed": True},
    "glow-dense": {"flow_type": "glow", "mask": "channel", "lu_decomposed": False},
    "glow-variational": {"flow_type": "glow", "mask": "channel", "dequantization": "variational"},
}
VECTOR_FLOWS = {"maf": {"flow_type": "maf"}, "nsf": {"flow_type": "nsf", "bins": 4}}


def randomized(module: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    """``module`` in float64 with every parameter moved off its (often identity) initial value."""
    torch.manual_seed(1)
    module = module.double()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return module


def image_flow(data_shape=(1, 8, 8), **fields):
    fields = {"num_scales": 2, "steps_per_scale": 2, "hidden_channels": 8, "hidden_layers": 1, "levels": 17,
              "data_shape": list(data_shape), **fields}
    return randomized(create_model("flow", modality="image", **fields)).eval()


def vector_flow(features=2, **fields):
    fields = {"steps_per_scale": 2, "hidden_channels": 8, "hidden_layers": 1, "data_shape": [features], **fields}
    return randomized(create_model("flow", modality="vector", **fields)).eval()


def log_abs_det_by_autograd(function, x: torch.Tensor) -> torch.Tensor:
    """log |det J| of ``function`` at each example of ``x``, the Jacobian of the flattened map by autograd."""
    values = []
    for example in x:
        def flat(v, shape=example.shape):
            return function(v.reshape(1, *shape)).reshape(-1)

        jacobian = torch.autograd.functional.jacobian(flat, example.reshape(-1))
        values.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(values)


def pixels(count: int, shape=(1, 8, 8), levels: int = 17, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, levels, (count, *shape), generator=generator) * (2 / (levels - 1)) - 1).double()


# --- invertibility ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMAGE_FLOWS))
def test_decode_inverts_encode_for_images(name):
    model = image_flow(**IMAGE_FLOWS[name])
    x = pixels(3) * 0.9  # inside the grid, where no value is at the logit's edge
    z = model.encode(pixel_values=x)
    assert z.shape == (3, 64)
    torch.testing.assert_close(model.decode(z), x, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(VECTOR_FLOWS))
def test_decode_inverts_encode_for_vectors(name):
    model = vector_flow(features=3, **VECTOR_FLOWS[name])
    x = torch.randn(5, 3, dtype=torch.float64) * 2
    torch.testing.assert_close(model.decode(model.encode(vectors=x)), x, rtol=0, atol=1e-10)
    latents = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(model.encode(vectors=model.decode(latents)), latents, rtol=0, atol=1e-10)


def test_squeeze_is_a_permutation_of_each_2x2_patch():
    x = torch.arange(2 * 4 * 6, dtype=torch.float64).reshape(1, 2, 4, 6)
    squeezed = squeeze(x)
    assert squeezed.shape == (1, 8, 2, 3)
    # channel 4c + 2i + j holds pixel (2h + i, 2w + j) of channel c
    assert squeezed[0, 4 * 1 + 2 * 1 + 0, 1, 2] == x[0, 1, 3, 4]
    assert torch.equal(unsqueeze(squeezed), x)


# --- log-determinants against autograd ----------------------------------------------------------------


def layer_cases():
    torch.manual_seed(0)
    actnorm = ActNorm(4)
    actnorm.train()
    actnorm(torch.randn(16, 4, 2, 2) * 3 + 1)  # the data-dependent initialisation
    return {
        "logit": (LogitTransform(bin_width=0.125, alpha=0.05), (2, 2, 2), 0.9),
        "actnorm": (actnorm, (4, 2, 2), 1.0),
        "invconv-lu": (InvertibleConv1x1(4, lu_decomposed=True), (4, 2, 2), 1.0),
        "invconv-dense": (InvertibleConv1x1(4, lu_decomposed=False), (4, 2, 2), 1.0),
        "coupling-checkerboard-0": (AffineCoupling(2, "checkerboard", 0, 8, 2), (2, 3, 3), 1.0),
        "coupling-checkerboard-1": (AffineCoupling(2, "checkerboard", 1, 8, 1), (2, 3, 3), 1.0),
        "coupling-channel-0": (AffineCoupling(3, "channel", 0, 8, 1), (3, 2, 2), 1.0),
        "coupling-channel-1": (AffineCoupling(3, "channel", 1, 8, 1), (3, 2, 2), 1.0),
    }


@pytest.mark.parametrize("name", list(layer_cases()))
def test_each_image_layers_log_det_is_the_log_det_of_its_jacobian(name):
    layer, shape, scale = layer_cases()[name]
    layer = randomized(layer).eval()
    x = (torch.rand(3, *shape, dtype=torch.float64) * 2 - 1) * scale
    y, log_det = layer(x)
    assert log_det.shape == (3,)
    torch.testing.assert_close(log_det, log_abs_det_by_autograd(lambda v: layer(v)[0], x), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(layer.inverse(y), x, rtol=0, atol=1e-10)
    assert not torch.allclose(y, x)  # the layer is not the identity, so the test says something


def test_a_coupling_with_context_has_the_log_det_of_its_jacobian_in_its_input():
    layer = randomized(AffineCoupling(2, "checkerboard", 0, 8, 1, context_channels=2))
    x, context = torch.randn(2, 2, 2, 2, dtype=torch.float64), torch.randn(2, 2, 2, 2, dtype=torch.float64)
    log_det = layer(x, context)[1]
    expected = torch.stack([
        log_abs_det_by_autograd(lambda v, c=context[i : i + 1]: layer(v, c)[0], x[i : i + 1])[0] for i in range(2)
    ])
    torch.testing.assert_close(log_det, expected, rtol=1e-8, atol=1e-8)


def test_the_variational_dequantizers_density_is_the_change_of_variables_of_its_noise():
    dequantizer = randomized(VariationalDequantizer(1, 8, 1))
    x, eps = pixels(2, (1, 2, 2)), torch.randn(2, 1, 2, 2, dtype=torch.float64)
    u, log_q = dequantizer(x, eps, [])
    assert ((u > 0) & (u < 1)).all()
    for i in range(2):
        jacobian = log_abs_det_by_autograd(lambda e, c=x[i : i + 1]: dequantizer(c, e, [])[0], eps[i : i + 1])[0]
        torch.testing.assert_close(log_q[i], standard_normal_log_prob(eps[i : i + 1])[0] - jacobian, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["realnvp", "glow-lu", "glow-dense"])
def test_a_whole_image_flows_log_det_is_the_log_det_of_its_jacobian(name):
    model = image_flow(**IMAGE_FLOWS[name], dequantization="none")
    x = pixels(2) * 0.9
    z = model.encode(pixel_values=x)
    log_det = model.log_prob(pixel_values=x) - standard_normal_log_prob(z)
    torch.testing.assert_close(log_det, log_abs_det_by_autograd(lambda v: model.encode(pixel_values=v), x), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", list(VECTOR_FLOWS))
def test_each_vector_layers_log_det_is_the_log_det_of_its_jacobian(name):
    model = vector_flow(features=3, **VECTOR_FLOWS[name])
    x = torch.randn(3, 3, dtype=torch.float64) * 2
    terms = []
    log_prob = model._training_log_prob(x, terms)
    assert len(terms) == 2
    inputs = x
    for layer, term in terms:
        transform = layer()  # zuko's lazy transform builds the transform it stands for
        torch.testing.assert_close(term, log_abs_det_by_autograd(transform, inputs), rtol=1e-8, atol=1e-8)
        inputs = transform(inputs)
    # and the whole is zuko's own log-density
    torch.testing.assert_close(log_prob, model.flow().log_prob(x), rtol=1e-10, atol=1e-10)


# --- densities integrate to one ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VECTOR_FLOWS))
def test_a_1d_flows_density_integrates_to_one(name):
    model = vector_flow(features=1, **VECTOR_FLOWS[name])
    grid = torch.linspace(-80, 80, 80001, dtype=torch.float64)
    with torch.no_grad():
        density = model.log_prob(vectors=grid[:, None]).exp()
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-4)
    # the randomised flow is far from its standard normal base, so the test says something
    assert (density - torch.exp(-0.5 * grid.square()) / math.sqrt(2 * math.pi)).abs().max() > 0.05


@pytest.mark.parametrize("name", list(VECTOR_FLOWS))
def test_a_2d_flows_density_integrates_to_one(name):
    model = vector_flow(features=2, **VECTOR_FLOWS[name])
    axis = torch.linspace(-12, 12, 321, dtype=torch.float64)
    points = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = model.log_prob(vectors=points).exp().reshape(321, 321)
    integral = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)
    assert float(integral) == pytest.approx(1.0, abs=1e-3)


# --- bits per dimension ---------------------------------------------------------------------------------


def test_bits_per_dim_includes_the_dequantisation_and_scaling_terms():
    levels, alpha = 5, 0.05
    model = create_model(
        "flow", modality="image", data_shape=[1, 2, 2], num_scales=1, steps_per_scale=1, actnorm=False, mask="channel",
        levels=levels, logit_alpha=alpha, eval_noise_samples=1,
    ).double().eval()  # a fresh coupling is the identity: the flow is the dequantisation and the logit alone
    x = np.array([[[[-1.0, -0.5], [0.5, 1.0]]]], dtype=np.float32)
    u = model.eval_noise[0].reshape(-1).tolist()

    w = 2 / (levels - 1)
    log_density = 0.0
    for value, noise in zip(x.reshape(-1).tolist(), u, strict=True):
        dequantized = value + w * (noise - 0.5)
        s = alpha + (1 - 2 * alpha) * (dequantized + 1 + w / 2) / (2 + w)
        y = math.log(s / (1 - s))
        log_density += -0.5 * y * y - 0.5 * math.log(2 * math.pi) + math.log((1 - 2 * alpha) / ((2 + w) * s * (1 - s)))
    expected = (-log_density / 4 + math.log((levels - 1) / 2)) / math.log(2)

    capabilities = get_registry().architectures["flow"][0].schema.capabilities
    context = MetricContext(device="cpu", capabilities=capabilities, data_info={"levels": levels})
    measured = bits_per_dim(model, ArrayDataset({"pixel_values": x}), context)["bits_per_dim"]
    assert measured == pytest.approx(expected, rel=1e-9)


def test_log_prob_of_pixels_is_the_importance_weighted_bound_over_its_fixed_noise():
    model = image_flow(**IMAGE_FLOWS["glow-variational"], eval_noise_samples=3)
    x = pixels(4)
    bounds = torch.stack([model._dequantized_log_prob(x, noise.expand_as(x), []) for noise in model.eval_noise])
    torch.testing.assert_close(model.log_prob(pixel_values=x), bounds.logsumexp(0) - math.log(3))
    assert (model.log_prob(pixel_values=x) >= bounds.mean(0)).all()


def test_log_prob_of_pixels_repeats_exactly_and_does_not_depend_on_the_batch():
    model = image_flow(**IMAGE_FLOWS["realnvp"])
    x = pixels(5)
    whole = model.log_prob(pixel_values=x)
    torch.testing.assert_close(model.log_prob(pixel_values=x), whole, rtol=0, atol=0)  # no reseeding needed
    torch.testing.assert_close(model.log_prob(pixel_values=x[2:3]), whole[2:3], rtol=1e-12, atol=1e-12)


def test_image_samples_lie_on_the_grid_of_levels():
    model = image_flow(**IMAGE_FLOWS["realnvp"], levels=5)
    samples = model.sample(64, generator=torch.Generator().manual_seed(0))
    assert samples.dtype == torch.float32 and samples.shape == (64, 1, 8, 8)
    steps = (samples.double() + 1) * 2  # levels 5: values -1, -0.5, 0, 0.5, 1
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-6)
    assert samples.min() >= -1 and samples.max() <= 1 and len(samples.unique()) > 2
