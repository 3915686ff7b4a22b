"""The maths of the Gaussian VAEs, on tiny inputs: the KL term, a probabilistic-PCA VAE whose
marginal likelihood is exact, reparameterised gradients, beta_vae's loss, the decoder's likelihood."""

from __future__ import annotations

import math

import pytest
import torch
from foundry_plugin_vae.model import DecoderLikelihood, gaussian_kl

from model_foundry import create_model


def test_the_kl_term_is_the_closed_form_and_a_monte_carlo_estimate():
    generator = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    posterior = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    closed_form = torch.distributions.kl_divergence(posterior, prior).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean, logvar), closed_form)
    torch.manual_seed(0)
    z = posterior.sample((100_000,))
    monte_carlo = (posterior.log_prob(z) - prior.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(gaussian_kl(mean, logvar), monte_carlo, atol=0.04, rtol=0.02)


# -- probabilistic PCA: p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), so p(x) = N(b, W W^T + s^2 I) -----------
W = torch.tensor([[2.0, 0.0], [0.0, -1.0], [0.0, 0.0]], dtype=torch.float64)  # orthogonal columns
B = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
SCALE = 0.5


def linear_gaussian_vae():
    """A vae with linear encoder and decoder and a Gaussian p(x|z) of fixed scale SCALE, in float64."""
    model = create_model(
        {
            "architecture": "vae", "likelihood": "gaussian", "min_scale": 1e-3,
            "encoder": {"input_shape": [3], "latent_dim": 2, "hidden_dims": []},
            "decoder": {"output_shape": [3], "latent_dim": 2, "hidden_dims": []},
        },
        modality="vector",
    ).double()
    (decoder_layer,) = model.decoder.mlp
    with torch.no_grad():
        decoder_layer.weight.copy_(W)
        decoder_layer.bias.copy_(B)
        model.likelihood.log_scale.fill_(math.log(SCALE))
    return model


def optimal_posterior(model):
    """Set the encoder to the exact posterior q(z|x) = N(M^-1 W^T (x - b), s^2 M^-1), M = W^T W + s^2 I
    (diagonal, because W's columns are orthogonal)."""
    precision = W.T @ W + SCALE**2 * torch.eye(2, dtype=torch.float64)
    gain = torch.linalg.solve(precision, W.T)
    (encoder_layer,) = model.encoder.mlp
    with torch.no_grad():
        encoder_layer.weight.copy_(torch.cat([gain, torch.zeros(2, 3, dtype=torch.float64)]))
        encoder_layer.bias.copy_(torch.cat([-gain @ B, torch.log(SCALE**2 / torch.diagonal(precision))]))


def exact_log_likelihood(x):
    covariance = W @ W.T + SCALE**2 * torch.eye(3, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(B, covariance).log_prob(x)


X = torch.tensor([[1.0, 0.5, -0.3], [-2.0, 1.5, 0.4], [0.3, -1.2, 0.0]], dtype=torch.float64)


def test_the_bound_meets_the_exact_marginal_likelihood_at_the_optimal_posterior():
    model = linear_gaussian_vae()
    optimal_posterior(model)
    exact = exact_log_likelihood(X)
    torch.manual_seed(0)
    # At the exact posterior every importance weight p(x, z) / q(z|x) is p(x): any K, any draw.
    for draws in (1, 7):
        torch.testing.assert_close(model.log_prob(vectors=X, num_samples=draws), exact, atol=1e-9, rtol=0)
    # The training loss, -(E_q log p(x|z) - KL), is -log p(x) in expectation.
    many = X.repeat(20_000, 1)
    out = model(vectors=many)
    assert out.loss.item() == pytest.approx(-exact.mean().item(), abs=0.02)


def test_the_elbo_stays_below_the_marginal_likelihood_elsewhere_and_importance_samples_tighten_it():
    model = linear_gaussian_vae()
    optimal_posterior(model)
    (encoder_layer,) = model.encoder.mlp
    with torch.no_grad():
        encoder_layer.bias[:2] += 0.7  # a worse posterior mean
        encoder_layer.bias[2:] += 1.0  # a too wide posterior
    exact = exact_log_likelihood(X)
    with torch.no_grad():
        elbo = expected_elbo(model, X)  # in closed form
        torch.manual_seed(0)
        draws = model.log_prob(vectors=X.repeat(20_000, 1), num_samples=1).view(20_000, 3)
        iwae = model.log_prob(vectors=X.repeat(500, 1), num_samples=64).view(500, 3).mean(0)
        loss = model(vectors=X.repeat(20_000, 1)).loss
    assert (elbo < exact - 0.3).all(), (elbo, exact)
    # K = 1 is the ELBO: within four standard errors of the Monte-Carlo mean
    assert ((draws.mean(0) - elbo).abs() < 4 * draws.std(0) / 20_000**0.5).all(), (draws.mean(0), elbo)
    assert (elbo + 0.1 < iwae).all() and (iwae <= exact + 1e-3).all(), (elbo, iwae, exact)
    # The training loss is -ELBO (kl_weight 1), with the KL in closed form.
    assert loss.item() == pytest.approx(-elbo.mean().item(), abs=0.02)


def expected_elbo(model, x):
    """E_q[log p(x|z)] - KL in closed form for the linear-Gaussian model (differentiable in the encoder)."""
    (encoder_layer,) = model.encoder.mlp
    statistics = x @ encoder_layer.weight.T + encoder_layer.bias
    mean, logvar = statistics.chunk(2, dim=-1)
    residual = x - mean @ W.T - B
    expected_square = residual.square().sum(-1) + (W.square() @ logvar.exp().T).sum(0)
    log_likelihood = -0.5 * expected_square / SCALE**2 - 3 * (math.log(SCALE) + 0.5 * math.log(2 * math.pi))
    return log_likelihood - gaussian_kl(mean, logvar)


def test_reparameterised_gradients_match_finite_differences_and_the_exact_gradient():
    model = linear_gaussian_vae()
    optimal_posterior(model)
    (encoder_layer,) = model.encoder.mlp
    with torch.no_grad():
        encoder_layer.weight.add_(0.3 * torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    many = X.repeat(5_000, 1)

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same noise every time: common random numbers
        return model(vectors=many).loss

    model.zero_grad()
    loss().backward()
    gradient = encoder_layer.weight.grad.clone()
    step = 1e-5
    finite = torch.zeros_like(gradient)
    for index in torch.cartesian_prod(torch.arange(4), torch.arange(3)):
        row, column = index.tolist()
        with torch.no_grad():
            encoder_layer.weight[row, column] += step
            up = loss().item()
            encoder_layer.weight[row, column] -= 2 * step
            down = loss().item()
            encoder_layer.weight[row, column] += step
        finite[row, column] = (up - down) / (2 * step)
    torch.testing.assert_close(gradient, finite, atol=1e-6, rtol=1e-5)
    # Unbiased: the reparameterised gradient over many draws is the gradient of the exact expectation.
    model.zero_grad()
    (-expected_elbo(model, many).mean()).backward()
    torch.testing.assert_close(gradient, encoder_layer.weight.grad, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("architecture, weight, value", [("beta_vae", "beta", 4.0), ("vae", "kl_weight", 0.3)])
def test_the_loss_is_exactly_reconstruction_plus_weight_times_kl(architecture, weight, value):
    torch.manual_seed(0)
    model = create_model({"architecture": architecture, "preset": "tiny", weight: value})
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    out = model(pixel_values=images)
    assert torch.equal(out.loss, out.reconstruction_loss + value * out.kl_loss)  # exactly, in the same float32 ops
    torch.manual_seed(1)  # the same draw of z, computed here
    mean, logvar = model.posterior(images)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    torch.testing.assert_close(out.reconstruction_loss, -model.likelihood.log_prob(images, model.decoder(z)).mean())
    torch.testing.assert_close(out.kl_loss, gaussian_kl(mean, logvar).mean())


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_the_discretized_likelihood_is_a_distribution_over_the_levels(levels):
    likelihood = DecoderLikelihood((1,), "discretized_logistic", levels, 0.01)
    with torch.no_grad():
        likelihood.log_scale.fill_(math.log(0.2))
    values = torch.linspace(-1, 1, levels)[:, None]  # every level, one per row
    for centre in (-1.3, -0.6, 0.0, 0.97):
        density = likelihood.log_prob(values, torch.full_like(values, centre))
        # log_prob is a density over [-1, 1]: the bin's probability over its width 2 / (levels - 1)
        probabilities = density.exp() * 2 / (levels - 1)
        assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)
    likelihood = DecoderLikelihood((1,), "discretized_logistic", 17, 0.01)
    mean = torch.tensor([[0.3]])
    logistic = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(0.0, 1.0), [torch.distributions.transforms.SigmoidTransform().inv,
                                                torch.distributions.transforms.AffineTransform(0.3, 1.0)],
    )
    bin_probability = logistic.cdf(torch.tensor(0.25 + 1 / 16)) - logistic.cdf(torch.tensor(0.25 - 1 / 16))
    assert likelihood.log_prob(torch.tensor([[0.25]]), mean).item() == pytest.approx(math.log(bin_probability * 8), abs=1e-5)
