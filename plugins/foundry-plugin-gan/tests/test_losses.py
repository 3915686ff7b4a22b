"""The adversarial losses on fixed discriminator outputs, and the gradient penalty of a linear critic."""

from __future__ import annotations

import math

import pytest
import torch
from foundry_plugin_gan.losses import LEAST_SQUARES, LOSSES, NON_SATURATING, WASSERSTEIN, gradient_penalty
from torch import nn

REAL = torch.tensor([2.0, -1.0], dtype=torch.float64)  # D(x) on two real examples
FAKE = torch.tensor([0.5, -3.0], dtype=torch.float64)  # D(G(z)) on two generated ones


def softplus(x: float) -> float:
    return math.log(1 + math.exp(x))


@pytest.mark.parametrize(("loss", "discriminator", "generator"), [
    # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) and -log sigmoid(D(G(z))), averaged
    (NON_SATURATING, (softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-3)) / 2, (softplus(-0.5) + softplus(3)) / 2),
    # 1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2 and 1/2 (D(G(z)) - 1)^2: ((1 + 4) / 2 + (0.25 + 9) / 2) / 2, (0.25 + 16) / 4
    (LEAST_SQUARES, 1.25 + 2.3125, 4.0625),
    # D(G(z)) - D(x) and -D(G(z)): -1.25 - 0.5, 1.25
    (WASSERSTEIN, -1.75, 1.25),
], ids=["non_saturating", "least_squares", "wasserstein"])
def test_each_loss_has_its_known_value_on_fixed_discriminator_outputs(loss, discriminator, generator):
    assert float(loss.discriminator(REAL, FAKE)) == pytest.approx(discriminator, rel=1e-12)
    assert float(loss.generator(FAKE)) == pytest.approx(generator, rel=1e-12)


def test_at_the_equilibrium_the_non_saturating_losses_are_the_log_2_of_a_coin():
    """A discriminator that cannot tell (D = 0, probability 1/2) costs 2 log 2; the generator log 2."""
    zeros = torch.zeros(5)
    assert float(NON_SATURATING.discriminator(zeros, zeros)) == pytest.approx(2 * math.log(2))
    assert float(NON_SATURATING.generator(zeros)) == pytest.approx(math.log(2))
    assert set(LOSSES) == {"non_saturating", "least_squares", "wasserstein"}


@pytest.mark.parametrize("shape", [(2,), (3, 4, 5)], ids=["vectors", "images"])
def test_a_linear_critics_gradient_penalty_is_lambda_times_the_squared_distance_of_its_norm_from_one(shape):
    """D(x) = w.x + b has gradient w everywhere: the penalty is exactly lambda (||w|| - 1)^2, over all of an
    example's values (every channel and pixel of an image), whatever the real and generated examples."""
    torch.manual_seed(0)
    size = math.prod(shape)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(size, 1)).double()
    with torch.no_grad():
        critic[1].weight.copy_(torch.linspace(-1.0, 2.0, size, dtype=torch.float64)[None])
    weight_norm = float(critic[1].weight.detach().norm())
    real, fake = torch.randn(6, *shape, dtype=torch.float64), torch.randn(6, *shape, dtype=torch.float64)
    penalty = gradient_penalty(critic, real, fake, weight=10.0)
    assert float(penalty) == pytest.approx(10.0 * (weight_norm - 1) ** 2, rel=1e-12)
    # It trains the critic: d/dw lambda (||w|| - 1)^2 = 2 lambda (||w|| - 1) w / ||w||.
    penalty.backward()
    expected = 2 * 10.0 * (weight_norm - 1) * critic[1].weight.detach() / weight_norm
    torch.testing.assert_close(critic[1].weight.grad, expected, rtol=1e-10, atol=1e-12)


def test_the_penalty_is_taken_at_points_between_real_and_generated_examples():
    """For D(x) = ||x||^2 / 2 the gradient at x_hat is x_hat itself: every point it is taken at lies on
    the segment from a real example to its generated partner."""
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return 0.5 * x.square().sum(1)

    real, fake = torch.zeros(500, 2), torch.ones(500, 2)
    gradient_penalty(critic, real, fake, weight=1.0, generator=torch.Generator().manual_seed(0))
    (mixed,) = seen
    assert torch.equal(mixed[:, 0], mixed[:, 1])  # one epsilon per example, not per value
    assert 0 <= float(mixed.min()) and float(mixed.max()) <= 1
    assert 0.4 < float(mixed.mean()) < 0.6  # epsilon ~ U[0, 1]
    again = []
    gradient_penalty(lambda x: again.append(x.detach()) or x.sum(1), real, fake, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], mixed)  # drawn from the generator given


def test_under_no_grad_the_penalty_is_a_number_without_a_graph():
    critic = nn.Linear(2, 1)
    with torch.no_grad():
        penalty = gradient_penalty(critic, torch.randn(4, 2), torch.randn(4, 2), weight=1.0)
    assert not penalty.requires_grad and torch.isfinite(penalty)
