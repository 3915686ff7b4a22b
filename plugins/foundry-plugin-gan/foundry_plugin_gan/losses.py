"""The adversarial losses of the GAN family and the WGAN-GP gradient penalty.

Each loss takes the discriminator's raw outputs (one real number per example, no sigmoid)
on real and generated examples and returns the two players' scalar losses:

==================  =====================================================  ===========================
loss                discriminator minimises                                generator minimises
==================  =====================================================  ===========================
``non_saturating``  ``softplus(-D(x)) + softplus(D(G(z)))``                ``softplus(-D(G(z)))``
                    (binary cross-entropy, real 1 and fake 0)              (Goodfellow et al. 2014, §3)
``least_squares``   ``½ (D(x) - 1)² + ½ D(G(z))²``                         ``½ (D(G(z)) - 1)²``
                    (Mao et al. 2017, a = 0, b = c = 1)
``wasserstein``     ``D(G(z)) - D(x)``                                     ``-D(G(z))``
                    (Arjovsky et al. 2017; a Lipschitz critic)
==================  =====================================================  ===========================

each averaged over the batch.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class AdversarialLoss(NamedTuple):
    """The two players' losses, each from the discriminator's outputs."""

    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (on real, on fake) -> scalar
    generator: Callable[[torch.Tensor], torch.Tensor]  # (on fake) -> scalar


NON_SATURATING = AdversarialLoss(
    discriminator=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
    generator=lambda fake: F.softplus(-fake).mean(),
)
LEAST_SQUARES = AdversarialLoss(
    discriminator=lambda real, fake: 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean(),
    generator=lambda fake: 0.5 * (fake - 1).square().mean(),
)
WASSERSTEIN = AdversarialLoss(
    discriminator=lambda real, fake: fake.mean() - real.mean(),
    generator=lambda fake: -fake.mean(),
)
LOSSES = {"non_saturating": NON_SATURATING, "least_squares": LEAST_SQUARES, "wasserstein": WASSERSTEIN}


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, weight: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP's ``weight · E[(‖∇ D(x̂)‖ - 1)²]`` at ``x̂ = ε x + (1 - ε) G(z)``, ``ε ~ U[0, 1]`` per example
    (Gulrajani et al. 2017).

    The norm is over all of an example's values (every channel and pixel of an image), and the
    graph is kept so that the penalty trains the critic. ``ε`` comes from ``generator``, else from
    torch's global RNG (per process, restored on resume). Gradients are taken with grad mode on even under ``no_grad``
    (evaluation), so the validation loss is the training objective.
    """
    differentiable = torch.is_grad_enabled()
    epsilon = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype,
                         generator=generator)
    with torch.enable_grad():
        mixed = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
        (gradient,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=differentiable)
    return weight * (gradient.flatten(1).norm(dim=1) - 1).square().mean()
