"""The models of ``ddpm``, ``diffusion`` and ``score_diffusion``, and their builders.

``DiffusionModel`` (``ddpm`` and ``diffusion``) learns to undo q(x_t | x_0): a network told t
predicts eps, x_0 or v from x_t, with the mean squared error to the true one as the loss
(Ho et al.'s simple loss), and samples by DDPM or DDIM steps from pure noise, with
classifier-free guidance when it is conditional. ``ScoreDiffusionModel`` learns the score
grad_x log p_sigma(x) of the data blurred by Gaussian noise of every level sigma by denoising
score matching, and samples by annealed Langevin dynamics or the reverse VE SDE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from foundry_plugin_diffusion.backbones import build_backbone
from foundry_plugin_diffusion.config import shape_problems
from foundry_plugin_diffusion.samplers import (
    annealed_langevin,
    gaussian,
    geometric_sigmas,
    invert_ddim,
    reverse_ve_sde,
    sample_ddim,
    sample_ddpm,
    spaced_timesteps,
)
from foundry_plugin_diffusion.schedules import NoiseSchedule, add_noise, target, to_x0_and_eps
from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput, batch_examples

# The range of timestep values the networks are told (score models map log sigma onto it).
TIME_RANGE = 999.0


class DenoisingModel(FoundryModel):
    """What both kinds share: the data's shape, the network, and reading a batch."""

    def __init__(self, config: ModelConfig, num_classes: int | None = None):
        super().__init__(config)
        params = config.params
        self.input_shape = tuple(params.input_shape)
        self.num_classes = num_classes
        self.network = build_backbone(params.backbone, params.backbone_type(), self.input_shape, num_classes)


    def _device(self) -> torch.device:
        return next(self.parameters()).device


class DiffusionModel(DenoisingModel):
    """Discrete-time diffusion with eps, x_0 or v prediction (``ddpm``: eps, unconditional)."""

    def __init__(self, config: ModelConfig):
        params = config.params
        super().__init__(config, getattr(params, "num_classes", None))
        self.prediction_type = getattr(params, "prediction_type", "epsilon")
        self.label_dropout = getattr(params, "label_dropout", 0.0)
        self.guidance_scale = getattr(params, "guidance_scale", 1.0)
        self.schedule = NoiseSchedule(params.noise_schedule)
        self.register_buffer("alphas_cumprod", self.schedule.alphas_cumprod.float(), persistent=False)
        self.clip_sample = params.clip_sample if params.clip_sample is not None else len(self.input_shape) == 3

    def forward(
        self, pixel_values: torch.Tensor | None = None, vectors: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """The mean squared error of the network's prediction at a uniform random t, noise from torch's RNG."""
        x0 = batch_examples(self, self.input_shape, pixel_values=pixel_values, vectors=vectors)
        count = x0.shape[0]
        t = torch.randint(0, self.schedule.num_timesteps, (count,), device=x0.device)
        noise = torch.randn_like(x0)
        alpha_bar = self.alphas_cumprod[t]
        labels = self._labels(class_labels, count)
        if labels is not None and self.training and self.label_dropout:
            dropped = torch.rand(count, device=x0.device) < self.label_dropout
            labels = torch.where(dropped, torch.full_like(labels, self.num_classes), labels)
        output = self.network(add_noise(x0, noise, alpha_bar), t, labels)
        return ModelOutput(loss=F.mse_loss(output.float(), target(self.prediction_type, x0, noise, alpha_bar)))

    @torch.no_grad()
    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None,
        sampler: str | None = None, steps: int | None = None, eta: float | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """``num_samples`` examples from noise, by the config's sampler unless ``sampler`` (ddpm or ddim),
        ``steps``, ``eta`` or ``guidance_scale`` say otherwise. A conditional model draws class
        ``conditions[i]`` for sample i (uniform classes from ``generator`` without conditions)."""
        params = self.config.params
        sampler, eta = sampler or params.sampler, params.eta if eta is None else eta
        steps = steps or params.sampling_steps or self.schedule.num_timesteps
        if not 1 <= steps <= self.schedule.num_timesteps:
            raise FoundryError(f"steps must be in 1..{self.schedule.num_timesteps} (the model's num_timesteps), got {steps}")
        device = self._device()
        labels = self._sampling_labels(conditions, num_samples, generator)
        denoise = self._denoiser(labels, self.guidance_scale if guidance_scale is None else guidance_scale)
        x = gaussian((num_samples, *self.input_shape), generator, device)
        timesteps = spaced_timesteps(self.schedule.num_timesteps, steps)
        if sampler == "ddpm":
            x = sample_ddpm(denoise, self.schedule, x, timesteps, generator, self.clip_sample)
        elif sampler == "ddim":
            x = sample_ddim(denoise, self.schedule, x, timesteps, eta, generator, self.clip_sample)
        else:
            raise FoundryError(f"unknown sampler {sampler!r}; use ddpm or ddim")
        return x.float()

    @torch.no_grad()
    def invert(self, x0: torch.Tensor, *, steps: int | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """The latent noise from which DDIM with eta 0 and ``steps`` steps samples ``x0`` (DDIM inversion)."""
        steps = steps or self.config.params.sampling_steps or self.schedule.num_timesteps
        labels = self._sampling_labels(conditions, x0.shape[0], None) if conditions is not None else None
        denoise = self._denoiser(labels, 1.0 if labels is None else self.guidance_scale)
        return invert_ddim(denoise, self.schedule, x0.float(), spaced_timesteps(self.schedule.num_timesteps, steps))

    def _denoiser(self, labels: torch.Tensor | None, guidance_scale: float):
        """``denoise(x_t, t) -> (x_0, eps)`` of the network, guided when ``guidance_scale`` is not 1."""
        if guidance_scale != 1.0 and self.num_classes is None:
            raise FoundryError(f"guidance_scale {guidance_scale}: this {self.architecture} model is unconditional "
                               "(num_classes is null), so there is nothing to guide towards; use 1.0")
        guided = labels is not None and guidance_scale != 1.0
        both = torch.cat([labels, torch.full_like(labels, self.num_classes)]) if guided else None

        def denoise(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            if guided:
                conditional, unconditional = self.network(torch.cat([x, x]), torch.cat([steps, steps]), both).chunk(2)
                output = unconditional + guidance_scale * (conditional - unconditional)
            else:
                output = self.network(x, steps, labels)
            return to_x0_and_eps(self.prediction_type, output.float(), x, self.alphas_cumprod[steps])

        return denoise

    def _labels(self, labels: torch.Tensor | None, count: int) -> torch.Tensor | None:
        """The class of each of ``count`` examples, checked; None for an unconditional model."""
        if self.num_classes is None:
            return None  # labels that come with the data (digits) are not conditioned on
        if labels is None:
            raise FoundryError(f"this {self.architecture} is conditional (num_classes {self.num_classes}) and needs class_labels")
        labels = torch.as_tensor(labels, dtype=torch.long, device=self._device())
        if labels.shape != (count,):
            raise FoundryError(f"expected {count} class labels, got a tensor of shape {list(labels.shape)}")
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise FoundryError(f"class labels must be in 0..{self.num_classes - 1}, got {sorted(set(labels.tolist()))}")
        return labels

    def _sampling_labels(
        self, conditions: torch.Tensor | None, count: int, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        if conditions is not None and self.num_classes is None:
            raise FoundryError(f"this {self.architecture} is unconditional (num_classes is null); sample without conditions")
        if conditions is None and self.num_classes is not None:
            where = generator.device if generator is not None else self._device()
            conditions = torch.randint(self.num_classes, (count,), generator=generator, device=where)
        return self._labels(conditions, count)


class ScoreDiffusionModel(DenoisingModel):
    """Noise-conditional score model s(x, sigma) = network(x, c(sigma)) / sigma, trained by denoising score matching."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.sigma_min, self.sigma_max = params.sigma_min, params.sigma_max

    def noise_input(self, sigma: torch.Tensor) -> torch.Tensor:
        """The timestep value the network is told for noise level sigma: log sigma mapped linearly onto [0, 999]."""
        low, high = math.log(self.sigma_min), math.log(self.sigma_max)
        return (sigma.log() - low) / (high - low) * TIME_RANGE

    def forward(
        self, pixel_values: torch.Tensor | None = None, vectors: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Denoising score matching with weight sigma^2: mean |sigma s(x + sigma z, sigma) + z|^2 over
        log-uniform sigma in [sigma_min, sigma_max]; its minimiser is the score of p_sigma."""
        x0 = batch_examples(self, self.input_shape, pixel_values=pixel_values, vectors=vectors)
        count = x0.shape[0]
        log_sigma = torch.empty(count, device=x0.device).uniform_(math.log(self.sigma_min), math.log(self.sigma_max))
        sigma = log_sigma.exp()
        noise = torch.randn_like(x0)
        scaled = sigma.reshape(-1, *[1] * (x0.dim() - 1))
        output = self.network(x0 + scaled * noise, self.noise_input(sigma), None)
        return ModelOutput(loss=F.mse_loss(output.float(), -noise))

    def score(self, x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """grad_x log p_sigma(x) as learned, at noise level ``sigma`` (default: sigma_min)."""
        sigma = self.sigma_min if sigma is None else sigma
        levels = torch.full((x.shape[0],), float(sigma), device=x.device)
        return self.network(x, self.noise_input(levels), None).float() / sigma

    @torch.no_grad()
    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None,
        sampler: str | None = None,
    ) -> torch.Tensor:
        """``num_samples`` examples from N(0, sigma_max^2 I), by annealed Langevin dynamics or the reverse VE SDE."""
        if conditions is not None:
            raise FoundryError(f"this {self.architecture} is unconditional; sample without conditions")
        params = self.config.params
        sampler = sampler or params.sampler
        x = self.sigma_max * gaussian((num_samples, *self.input_shape), generator, self._device())
        if sampler == "langevin":
            sigmas = geometric_sigmas(self.sigma_max, self.sigma_min, params.num_noise_levels)
            x = annealed_langevin(self.score, x, sigmas, params.langevin_steps, params.langevin_step_size,
                                  generator, params.denoise)
        elif sampler == "sde":
            x = reverse_ve_sde(self.score, x, self.sigma_max, self.sigma_min, params.sde_steps,
                               params.corrector_steps, params.snr, generator)
        else:
            raise FoundryError(f"unknown sampler {sampler!r}; use langevin or sde")
        return x.float()


def _checked(config: ModelConfig) -> ModelConfig:
    # create_model sets the modality (from the data, or its modality= argument) after the config's checks ran.
    problems = list(shape_problems(config.params))
    if problems:
        key, message = problems[0]
        raise FoundryError(f"model.{key} of a {config.architecture} for {config.params.modality or 'its'} data {message}")
    return config


def build(config: ModelConfig) -> DiffusionModel:
    return DiffusionModel(_checked(config))


def build_score(config: ModelConfig) -> ScoreDiffusionModel:
    return ScoreDiffusionModel(_checked(config))
