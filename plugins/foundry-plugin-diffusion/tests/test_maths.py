"""The forward process, the parameterisations and every sampler step, against closed forms and diffusers."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, ScoreSdeVeScheduler
from foundry_plugin_diffusion.config import NoiseScheduleConfig
from foundry_plugin_diffusion.samplers import (
    annealed_langevin,
    invert_ddim,
    reverse_ve_sde,
    sample_ddim,
    sample_ddpm,
    spaced_timesteps,
    ve_sde_corrector,
    ve_sde_predictor,
)
from foundry_plugin_diffusion.schedules import NoiseSchedule, add_noise, target, to_x0_and_eps

LINEAR = NoiseSchedule(NoiseScheduleConfig())
COSINE = NoiseSchedule(NoiseScheduleConfig(schedule_type="cosine"))
PREDICTIONS = ("epsilon", "sample", "v_prediction")


# --- the forward process ---------------------------------------------------------------------------


def test_linear_schedule_at_step_487_has_the_published_alpha_bar_and_posterior_variance():
    assert LINEAR.alpha_bar(487) == pytest.approx(0.0885857, abs=5e-8)
    assert LINEAR.posterior_variance(487) == pytest.approx(0.0097916, abs=5e-8)


def test_schedules_match_diffusers_betas_and_alpha_bars():
    for ours, name in ((LINEAR, "linear"), (COSINE, "squaredcos_cap_v2")):
        theirs = DDPMScheduler(beta_schedule=name)
        torch.testing.assert_close(ours.betas.float(), theirs.betas, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=1e-4, atol=1e-7)


def test_cosine_alpha_bar_is_the_squared_cosine_from_near_one_to_zero():
    def f(fraction: float) -> float:
        return math.cos((fraction + 0.008) / 1.008 * math.pi / 2) ** 2

    T = COSINE.num_timesteps
    assert COSINE.alpha_bar(0) == pytest.approx(f(1 / T) / f(0), rel=1e-12)
    assert 0.9999 < COSINE.alpha_bar(0) < 1
    assert COSINE.alpha_bar(T // 2) == pytest.approx(f((T // 2 + 1) / T) / f(0), rel=1e-9)  # alpha_bar_t = f((t+1)/T) / f(0)
    assert COSINE.alpha_bar(T - 1) < 1e-8  # the last beta is capped at 0.999: alpha_bar ends at ~0
    assert float(COSINE.betas.max()) == pytest.approx(0.999)


def test_q_xt_given_x0_is_the_chain_of_single_steps():
    # x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z: mean and variance propagate exactly by recursion.
    x0 = torch.tensor([0.7, -1.3], dtype=torch.float64)
    mean, variance = x0.clone(), 0.0
    for t in range(LINEAR.num_timesteps):
        beta = float(LINEAR.betas[t])
        mean, variance = math.sqrt(1 - beta) * mean, (1 - beta) * variance + beta
        if t in (0, 487, 999):
            closed_mean, closed_variance = LINEAR.q_mean_and_variance(x0, t)
            torch.testing.assert_close(closed_mean, mean, rtol=1e-10, atol=1e-12)
            assert closed_variance == pytest.approx(variance, rel=1e-10)


def test_posterior_is_gaussian_conditioning_of_the_two_step_joint():
    # x_{t-1} = a1 x0 + s1 e1, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e2: condition the joint on x_t.
    x0, x_t, t = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.4], dtype=torch.float64), 487
    alpha_bar_previous, beta = LINEAR.alpha_bar(t - 1), float(LINEAR.betas[t])
    mean_previous, var_previous = math.sqrt(alpha_bar_previous) * x0, 1 - alpha_bar_previous
    mean_t = math.sqrt(1 - beta) * mean_previous
    var_t, covariance = (1 - beta) * var_previous + beta, math.sqrt(1 - beta) * var_previous
    conditional_mean = mean_previous + covariance / var_t * (x_t - mean_t)
    conditional_variance = var_previous - covariance**2 / var_t
    torch.testing.assert_close(LINEAR.posterior_mean(x0, x_t, t), conditional_mean, rtol=1e-10, atol=1e-12)
    assert LINEAR.posterior_variance(t) == pytest.approx(conditional_variance, rel=1e-10)


# --- eps, x0 and v ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_each_parameterisation_gives_back_x0_and_eps_exactly(prediction_type):
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, generator=generator, dtype=torch.float64), torch.randn(6, 3, generator=generator, dtype=torch.float64)
    alpha_bar = LINEAR.alphas_cumprod[torch.tensor([0, 10, 200, 487, 900, 999])]
    x_t = add_noise(x0, noise, alpha_bar)
    recovered_x0, recovered_eps = to_x0_and_eps(prediction_type, target(prediction_type, x0, noise, alpha_bar), x_t, alpha_bar)
    torch.testing.assert_close(recovered_x0, x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(recovered_eps, noise, rtol=1e-9, atol=1e-9)


def test_v_is_the_rotation_of_eps_and_x0():
    alpha_bar = torch.tensor([0.3], dtype=torch.float64)
    x0, noise = torch.tensor([[2.0]], dtype=torch.float64), torch.tensor([[-1.0]], dtype=torch.float64)
    v = target("v_prediction", x0, noise, alpha_bar)
    assert float(v) == pytest.approx(math.sqrt(0.3) * -1.0 - math.sqrt(0.7) * 2.0)
    torch.testing.assert_close(target("v_prediction", x0, noise, alpha_bar).square() + add_noise(x0, noise, alpha_bar).square(),
                               x0.square() + noise.square())  # (x_t, v) is a rotation of (x0, eps)


# --- sampler steps against diffusers' schedulers ---------------------------------------------------


def fake_network(x: torch.Tensor, t: int) -> torch.Tensor:
    """A fixed smooth function of (x_t, t) standing in for a network."""
    return torch.tanh(0.8 * x + 0.001 * t) * 0.9 + 0.05 * torch.sin(3 * x)


def denoiser(prediction_type: str, schedule: NoiseSchedule):
    def denoise(x, t):
        alpha_bar = schedule.alphas_cumprod.float()[torch.full((x.shape[0],), t)]
        return to_x0_and_eps(prediction_type, fake_network(x, t), x, alpha_bar)

    return denoise


def diffusers_loop(scheduler, x: torch.Tensor, generator: torch.Generator, **options) -> torch.Tensor:
    for t in scheduler.timesteps:
        x = scheduler.step(fake_network(x, int(t)), t, x, generator=generator, **options).prev_sample
    return x


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize(("schedule", "steps"), [("linear", 37), ("cosine", 100)])
def test_ddpm_sampling_is_diffusers_ddpm_scheduler_step_for_step(prediction_type, schedule, steps):
    ours_schedule = LINEAR if schedule == "linear" else COSINE
    scheduler = DDPMScheduler(prediction_type=prediction_type, clip_sample=True,
                              beta_schedule="linear" if schedule == "linear" else "squaredcos_cap_v2")
    scheduler.set_timesteps(steps)
    timesteps = spaced_timesteps(1000, steps)
    assert timesteps == scheduler.timesteps.tolist()
    start = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    theirs = diffusers_loop(scheduler, start, torch.Generator().manual_seed(2))
    ours = sample_ddpm(denoiser(prediction_type, ours_schedule), ours_schedule, start, timesteps,
                       torch.Generator().manual_seed(2), clip=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_sampling_is_diffusers_ddim_scheduler_step_for_step(prediction_type, eta):
    scheduler = DDIMScheduler(prediction_type=prediction_type, clip_sample=True)
    scheduler.set_timesteps(50)
    timesteps = spaced_timesteps(1000, 50)
    assert timesteps == scheduler.timesteps.tolist()
    start = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    theirs = diffusers_loop(scheduler, start, torch.Generator().manual_seed(2), eta=eta)
    ours = sample_ddim(denoiser(prediction_type, LINEAR), LINEAR, start, timesteps, eta,
                       torch.Generator().manual_seed(2), clip=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def gaussian_data_denoiser(scale: float, schedule: NoiseSchedule):
    """The exact E[eps | x_t] for data N(0, scale^2 I): x_t ~ N(0, alpha_bar scale^2 + 1 - alpha_bar)."""
    def denoise(x, t):
        alpha_bar = schedule.alpha_bar(t)
        eps = math.sqrt(1 - alpha_bar) * x / (alpha_bar * scale**2 + 1 - alpha_bar)
        return (x - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar), eps

    return denoise


def test_ddim_with_eta_0_is_deterministic_and_inverts_to_the_same_latent():
    denoise = gaussian_data_denoiser(0.5, LINEAR)
    latent = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = {}
    for steps in (250, 1000):
        timesteps = spaced_timesteps(1000, steps)
        first = sample_ddim(denoise, LINEAR, latent, timesteps, 0.0, torch.Generator().manual_seed(1))
        again = sample_ddim(denoise, LINEAR, latent, timesteps, 0.0, torch.Generator().manual_seed(2))
        assert torch.equal(first, again)  # no randomness after the latent
        assert float(first.std()) == pytest.approx(0.5, rel=0.2)  # it lands on the data's scale
        errors[steps] = float((invert_ddim(denoise, LINEAR, first, timesteps) - latent).abs().max())
    # Inversion evaluates each step's network at the other end of the step: first order in the step size,
    # so the latent comes back to within 2e-2 with 1000 steps, and 4x closer for 4x the steps.
    assert errors[1000] < 2e-2
    assert 3 < errors[250] / errors[1000] < 5


def test_ve_sde_predictor_and_corrector_are_diffusers_score_sde_ve_steps():
    levels = 17  # timesteps i / 16 index the discrete sigmas exactly
    scheduler = ScoreSdeVeScheduler(num_train_timesteps=levels, sigma_min=0.01, sigma_max=50.0)
    scheduler.set_timesteps(levels)
    scheduler.set_sigmas(levels)
    sigmas = scheduler.discrete_sigmas
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    score = fake_network(x, 3)
    for index in (16, 9, 1, 0):
        theirs = scheduler.step_pred(score, index / 16, x, generator=torch.Generator().manual_seed(index))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(index))
        sigma_next = float(sigmas[index - 1]) if index else 0.0
        ours, ours_mean = ve_sde_predictor(x, score, float(sigmas[index]), sigma_next, noise)
        torch.testing.assert_close(ours, theirs.prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours_mean, theirs.prev_sample_mean, rtol=1e-5, atol=1e-5)
    theirs = scheduler.step_correct(score, x, generator=torch.Generator().manual_seed(5)).prev_sample
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(ve_sde_corrector(x, score, scheduler.config.snr, noise), theirs, rtol=1e-5, atol=1e-5)


def gaussian_score(mean: float, scale: float):
    """The exact score of N(mean, scale^2) blurred by noise sigma: -(x - mean) / (scale^2 + sigma^2)."""
    return lambda x, sigma: -(x - mean) / (scale**2 + sigma**2)


@pytest.mark.parametrize("sampler", ["langevin", "sde"])
def test_langevin_and_the_reverse_sde_reach_the_gaussian_their_score_defines(sampler):
    generator = torch.Generator().manual_seed(0)
    score, sigma_max = gaussian_score(1.5, 0.3), 5.0
    start = sigma_max * torch.randn(4000, 2, generator=generator, dtype=torch.float64)
    if sampler == "langevin":
        sigmas = [sigma_max * (0.01 / sigma_max) ** (i / 9) for i in range(10)]
        samples = annealed_langevin(score, start, sigmas, 100, 5e-5, generator, denoise=False)
    else:
        samples = reverse_ve_sde(score, start, sigma_max, 0.01, 200, 1, 0.16, generator)
    assert float(samples.mean()) == pytest.approx(1.5, abs=0.03)
    assert float(samples.std()) == pytest.approx(0.3, rel=0.08)
