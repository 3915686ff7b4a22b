"""Samplers: one step of each as a small function, and the loops that chain them.

The loops take the network as a callable, so that tests can drive them with analytic
denoisers and scores:

- ``denoise(x_t, t) -> (x_0, eps)`` for the discrete-time samplers (DDPM, DDIM);
- ``score(x, sigma) -> grad_x log p_sigma(x)`` for annealed Langevin and the reverse VE SDE.

Every random draw comes from ``generator`` where it lives (a seeded CPU generator gives the
same samples on any device), in the order diffusers' pipelines draw them: the starting noise,
then one draw per step that adds noise.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

from foundry_plugin_diffusion.schedules import NoiseSchedule

Denoiser = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
Score = Callable[[torch.Tensor, float], torch.Tensor]


def gaussian(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)


def spaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps, largest first, spaced by T // steps from 0 (diffusers' ``leading`` spacing)."""
    ratio = num_timesteps // steps
    return [i * ratio for i in reversed(range(steps))]


# --- one step ------------------------------------------------------------------------------------


def ddpm_step(
    schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: int, previous: int, noise: torch.Tensor | None
) -> torch.Tensor:
    """A draw of q(x_previous | x_t, x_0) with x_0 predicted: the posterior mean plus its standard deviation times noise."""
    mean = schedule.posterior_mean(x0, x_t, t, previous)
    if noise is None:
        return mean
    return mean + math.sqrt(max(schedule.posterior_variance(t, previous), 1e-20)) * noise


def ddim_step(
    schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor, t: int, previous: int, eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12): sqrt(alpha_bar_prev) x_0 + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z,
    sigma = eta * sqrt(posterior variance). With eta 0 it is deterministic, and with ``previous > t`` it runs
    the ODE the other way (inversion)."""
    alpha_bar_previous = schedule.alpha_bar(previous)
    std = eta * math.sqrt(schedule.posterior_variance(t, previous)) if eta else 0.0
    out = math.sqrt(alpha_bar_previous) * x0 + math.sqrt(1 - alpha_bar_previous - std**2) * eps
    return out + std * noise if std and noise is not None else out


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """x + step_size / 2 * score + sqrt(step_size) * z: Langevin dynamics, whose stationary law is p."""
    return x + 0.5 * step_size * score + math.sqrt(step_size) * noise


def ve_sde_predictor(
    x: torch.Tensor, score: torch.Tensor, sigma: float, sigma_next: float, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-diffusion predictor of the VE SDE from sigma to sigma_next < sigma: (the draw, its mean).

    mean = x + (sigma^2 - sigma_next^2) score; draw = mean + sqrt(sigma^2 - sigma_next^2) z."""
    variance = sigma**2 - sigma_next**2
    mean = x + variance * score
    return mean + math.sqrt(variance) * noise, mean


def ve_sde_corrector(x: torch.Tensor, score: torch.Tensor, snr: float, noise: torch.Tensor) -> torch.Tensor:
    """Langevin corrector with the step 2 (snr |z| / |score|)^2, each norm the batch mean of the examples'
    norms (Song et al.'s and diffusers' choice: a per-example ratio explodes where a low-dimensional
    example's score is near zero)."""
    def mean_norm(values: torch.Tensor) -> torch.Tensor:
        return values.flatten(1).norm(dim=1).mean()

    step = 2 * (snr * mean_norm(noise) / mean_norm(score)) ** 2
    return x + step * score + (2 * step).sqrt() * noise


# --- loops ---------------------------------------------------------------------------------------


def sample_ddpm(
    denoise: Denoiser, schedule: NoiseSchedule, x: torch.Tensor, timesteps: list[int],
    generator: torch.Generator | None = None, clip: bool = False,
) -> torch.Tensor:
    """Ancestral sampling from x_T = ``x`` through ``timesteps`` (diffusers' DDPMPipeline)."""
    for index, t in enumerate(timesteps):
        previous = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        x0, _ = denoise(x, t)
        if clip:
            x0 = x0.clamp(-1, 1)
        noise = gaussian(tuple(x.shape), generator, x.device) if t > 0 else None
        x = ddpm_step(schedule, x0, x, t, previous, noise)
    return x


def sample_ddim(
    denoise: Denoiser, schedule: NoiseSchedule, x: torch.Tensor, timesteps: list[int], eta: float = 0.0,
    generator: torch.Generator | None = None, clip: bool = False,
) -> torch.Tensor:
    """DDIM sampling from x_T = ``x`` through ``timesteps`` down to alpha_bar = 1 (diffusers' DDIMPipeline)."""
    step_back = timesteps[0] - timesteps[1] if len(timesteps) > 1 else timesteps[0] + 1
    for t in timesteps:
        x0, eps = denoise(x, t)
        if clip:
            x0 = x0.clamp(-1, 1)
        noise = gaussian(tuple(x.shape), generator, x.device) if eta else None
        x = ddim_step(schedule, x0, eps, t, t - step_back, eta, noise)
    return x


def invert_ddim(denoise: Denoiser, schedule: NoiseSchedule, x0: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """The latent x_T that DDIM with eta 0 maps to ``x0``: its steps run backwards from alpha_bar = 1, each
    network call at the lower level of its step (the first, from the clean data, at the smallest timestep)."""
    ascending = list(reversed(timesteps))
    levels = [-1] + ascending  # -1: alpha_bar 1, the clean data
    x = x0
    for level, next_level in itertools.pairwise(levels):
        _, eps = denoise(x, max(level, ascending[0]))
        alpha_bar = schedule.alpha_bar(level)
        x0_predicted = (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
        x = ddim_step(schedule, x0_predicted, eps, level, next_level)
    return x


def geometric_sigmas(sigma_max: float, sigma_min: float, count: int) -> list[float]:
    """``count`` noise levels from sigma_max down to sigma_min, equally spaced in log sigma."""
    if count == 1:
        return [sigma_min]
    ratio = math.log(sigma_min / sigma_max) / (count - 1)
    return [sigma_max * math.exp(ratio * i) for i in range(count)]


def annealed_langevin(
    score: Score, x: torch.Tensor, sigmas: list[float], steps: int, epsilon: float,
    generator: torch.Generator | None = None, denoise: bool = True,
) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, algorithm 1): ``steps`` Langevin steps of size
    epsilon sigma_i^2 / sigma_L^2 at each level sigma_i, largest first; then, with ``denoise``, the
    step x + sigma_L^2 score(x, sigma_L) to the posterior mean (Tweedie's formula)."""
    smallest = sigmas[-1]
    for sigma in sigmas:
        step_size = epsilon * (sigma / smallest) ** 2
        for _ in range(steps):
            x = langevin_step(x, score(x, sigma), step_size, gaussian(tuple(x.shape), generator, x.device))
    return x + smallest**2 * score(x, smallest) if denoise else x


def reverse_ve_sde(
    score: Score, x: torch.Tensor, sigma_max: float, sigma_min: float, steps: int, corrector_steps: int = 1,
    snr: float = 0.16, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Predictor-corrector sampling of the reverse VE SDE (Song et al. 2021) over ``steps`` geometric
    levels from sigma_max to sigma_min, then to sigma 0; returns the last predictor's mean (no noise)."""
    sigmas = geometric_sigmas(sigma_max, sigma_min, steps) + [0.0]
    mean = x
    for sigma, sigma_next in itertools.pairwise(sigmas):
        for _ in range(corrector_steps):
            x = ve_sde_corrector(x, score(x, sigma), snr, gaussian(tuple(x.shape), generator, x.device))
        x, mean = ve_sde_predictor(x, score(x, sigma), sigma, sigma_next, gaussian(tuple(x.shape), generator, x.device))
    return mean
