"""The forward process of discrete-time diffusion and the conversions between what a network predicts.

With betas beta_t (t = 0 .. T-1), alpha_t = 1 - beta_t and alpha_bar_t = prod_{s <= t} alpha_s:

    q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I),  beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t
    mu~_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t

Writing a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t), x_t = a x_0 + s eps and v = a eps - s x_0,
so that any one of eps, x_0 and v gives the other two given x_t (:func:`to_x0_and_eps`).
Tables are computed in float64 from the config and kept as float32 buffers.
"""

from __future__ import annotations

import math

import torch

from foundry_plugin_diffusion.config import NoiseScheduleConfig

COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal: alpha_bar(t) = cos((t/T + s) / (1 + s) * pi/2)^2
MAX_BETA = 0.999


def betas(config: NoiseScheduleConfig) -> torch.Tensor:
    """The T betas of the schedule, float64."""
    steps = config.num_timesteps
    if config.schedule_type == "linear":
        return torch.linspace(config.beta_start, config.beta_end, steps, dtype=torch.float64)

    def alpha_bar(fraction: float) -> float:
        return math.cos((fraction + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return torch.tensor(
        [min(1 - alpha_bar((t + 1) / steps) / alpha_bar(t / steps), MAX_BETA) for t in range(steps)],
        dtype=torch.float64,
    )


class NoiseSchedule:
    """The tables of a schedule (float64): betas, alphas_cumprod (alpha_bar), and the posterior's variance."""

    def __init__(self, config: NoiseScheduleConfig):
        self.num_timesteps = config.num_timesteps
        self.betas = betas(config)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t; 1 for t < 0 (no noise before the first step)."""
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0

    def q_mean_and_variance(self, x0: torch.Tensor, t: int) -> tuple[torch.Tensor, float]:
        """Mean and (scalar) variance of q(x_t | x_0)."""
        alpha_bar = self.alpha_bar(t)
        return math.sqrt(alpha_bar) * x0, 1 - alpha_bar

    def posterior_variance(self, t: int, previous: int | None = None) -> float:
        """beta~ of q(x_previous | x_t, x_0) (previous = t - 1 unless a sampler skips steps)."""
        previous = t - 1 if previous is None else previous
        alpha_bar, alpha_bar_previous = self.alpha_bar(t), self.alpha_bar(previous)
        beta = 1 - alpha_bar / alpha_bar_previous
        return (1 - alpha_bar_previous) / (1 - alpha_bar) * beta

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: int, previous: int | None = None) -> torch.Tensor:
        """mu~ of q(x_previous | x_t, x_0)."""
        previous = t - 1 if previous is None else previous
        alpha_bar, alpha_bar_previous = self.alpha_bar(t), self.alpha_bar(previous)
        alpha = alpha_bar / alpha_bar_previous
        x0_coefficient = math.sqrt(alpha_bar_previous) * (1 - alpha) / (1 - alpha_bar)
        xt_coefficient = math.sqrt(alpha) * (1 - alpha_bar_previous) / (1 - alpha_bar)
        return x0_coefficient * x0 + xt_coefficient * x_t


def broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example values (N,) shaped to multiply examples (N, ...)."""
    return values.reshape(-1, *[1] * (like.dim() - 1)).to(like.dtype)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps, alpha_bar per example (N,)."""
    return broadcast(alpha_bar.sqrt(), x0) * x0 + broadcast((1 - alpha_bar).sqrt(), x0) * noise


def target(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """What a network of ``prediction_type`` should output for x_t made from ``x0`` and ``noise``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    return broadcast(alpha_bar.sqrt(), x0) * noise - broadcast((1 - alpha_bar).sqrt(), x0) * x0


def to_x0_and_eps(
    prediction_type: str, output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_0, eps) from a network's ``output`` of ``prediction_type`` at x_t; alpha_bar per example (N,)."""
    a, s = broadcast(alpha_bar.sqrt(), x_t), broadcast((1 - alpha_bar).sqrt(), x_t)
    if prediction_type == "epsilon":
        return (x_t - s * output) / a, output
    if prediction_type == "sample":
        return output, (x_t - a * output) / s
    return a * x_t - s * output, s * x_t + a * output
