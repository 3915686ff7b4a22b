"""Energy-based models: the ``ebm`` and ``deep_ebm`` architectures.

A network gives every example x one number, its energy E(x); the model is the density
p(x) = exp(-E(x)) / Z, whose normalizer Z is never computed. Its score is
grad log p(x) = -grad E(x), and samples come from Langevin dynamics (SGLD):

    x <- x - step_size * grad E(x) + noise_scale * N(0, I)

which, with noise_scale = sqrt(2 * step_size) (the default) and small steps, leaves exp(-E(x))
invariant; a smaller noise samples the colder exp(-E(x) / T), T = noise_scale**2 / (2 * step_size).
Images stay clamped to their range [-1, 1].

Training is contrastive: the gradient of the log-likelihood is
-E_data[grad E] + E_model[grad E], so the loss is

    loss = mean E(x+) - mean E(x-) + alpha * mean(E(x+)^2 + E(x-)^2)

over a data batch x+ and negatives x- drawn from the model by SGLD. The chains are persistent:
each step starts them from a replay buffer of earlier negatives (a share ``reinit_prob``
restarting from uniform noise), runs ``mcmc.n_steps`` SGLD steps and writes the results back.
The buffer is a registered tensor of the model, so every checkpoint (``model.safetensors``)
holds it, and a resumed run continues the same chains; the chains draw from torch's global
generator, which training checkpoints also restore.

``ebm`` uses the core's shared encoder (an MLP, or stride-2 convolutions for images) with one
output; ``deep_ebm`` a residual network in the style of IGEBM (Du & Mordatch, 2019): a stem,
stages of pre-activation residual blocks, spectral normalization of every weight, a mean over
positions and a linear head.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from model_foundry.plugin import (
    EncoderConfig,
    FoundryError,
    FoundryModel,
    ModelConfig,
    ModelOutput,
    activation,
    batch_examples,
    build_encoder,
    network_kind,
    normalization,
)

IMAGE_RANGE = (-1.0, 1.0)  # images are scaled to [-1, 1]; SGLD keeps them there


# --- Langevin dynamics ---------------------------------------------------------------------------


def langevin(
    energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, n_steps: int, step_size: float,
    noise_scale: float | None = None, clip_value: float | None = None, bounds: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n_steps`` SGLD updates ``x <- x - step_size * grad E(x) + noise_scale * N(0, I)`` from ``x``.

    ``noise_scale`` None is ``sqrt(2 * step_size)`` (Langevin dynamics of exp(-E)); ``clip_value``
    clips each gradient element; ``bounds`` clamps x after each update. The noise comes from
    ``generator`` (on its device; torch's global generator when None). Only x is differentiated:
    no parameter gradient is touched.
    """
    noise = math.sqrt(2 * step_size) if noise_scale is None else noise_scale
    device = generator.device if generator is not None else x.device
    x = x.detach()
    with torch.enable_grad():
        for _ in range(n_steps):
            x.requires_grad_(True)
            (gradient,) = torch.autograd.grad(energy(x).sum(), x)
            if clip_value is not None:
                gradient = gradient.clamp(-clip_value, clip_value)
            step_noise = torch.randn(x.shape, generator=generator, device=device).to(x.device)
            x = x.detach() - step_size * gradient + noise * step_noise
            if bounds is not None:
                x = x.clamp(*bounds)
    return x.detach()


# --- the deep_ebm energy network -----------------------------------------------------------------


def spectrally_normalized(layer: nn.Module, spectral: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if spectral else layer


class ResidualBlock(nn.Module):
    """x + f(x), f = activation -> layer -> normalization -> activation -> layer (pre-activation).

    A layer is a 3x3 convolution on images (``spatial``) and a linear layer on vectors.
    """

    def __init__(self, width: int, spatial: bool, activation_name: str, normalization_name: str, spectral: bool):
        super().__init__()

        def layer() -> nn.Module:
            inner = nn.Conv2d(width, width, 3, padding=1) if spatial else nn.Linear(width, width)
            return spectrally_normalized(inner, spectral)

        self.branch = nn.Sequential(
            activation(activation_name), layer(), normalization(normalization_name, width, spatial),
            activation(activation_name), layer(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ResidualEnergyNetwork(nn.Module):
    """Examples (N, *input_shape) -> energies (N, 1): stem, stages of residual blocks, pooled linear head.

    Conv (images): a 3x3 convolution stem; each stage after the first halves the image (2x2
    average pooling) and changes the width with a 1x1 convolution. MLP (vectors, or flattened
    images with ``kind: mlp``): a linear stem and linear width changes. The head averages the features over positions and maps them to one number.
    """

    def __init__(self, input_shape: tuple[int, ...], config: object):
        super().__init__()
        spatial = network_kind(config.kind, input_shape) == "conv"
        spectral, widths = config.spectral_norm, config.hidden_dims

        def projection(width_in: int, width_out: int, stem: bool = False) -> nn.Module:
            if not spatial:
                return spectrally_normalized(nn.Linear(width_in, width_out), spectral)
            size = 3 if stem else 1
            return spectrally_normalized(nn.Conv2d(width_in, width_out, size, padding=size // 2), spectral)

        layers: list[nn.Module] = [projection(input_shape[0] if spatial else math.prod(input_shape), widths[0], stem=True)]
        for index, width in enumerate(widths):
            if index > 0:
                if spatial:
                    layers.append(nn.AvgPool2d(2, ceil_mode=True))
                layers.append(projection(widths[index - 1], width))
            layers += [
                ResidualBlock(width, spatial, config.activation, config.normalization, spectral)
                for _ in range(config.blocks_per_stage)
            ]
        layers.append(activation(config.activation))
        self.features = nn.Sequential(*layers)
        self.spatial = spatial
        self.head = spectrally_normalized(nn.Linear(widths[-1], 1), spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x if self.spatial else x.flatten(1))
        return self.head(features.mean(dim=(2, 3)) if self.spatial else features)


def energy_network(architecture: str, params: object) -> nn.Module:
    """E(x) of an architecture's config: (N, *input_shape) -> (N, 1)."""
    shape, network = tuple(params.input_shape), params.energy_network
    if architecture == "deep_ebm":
        return ResidualEnergyNetwork(shape, network)
    encoder = EncoderConfig(
        input_shape=shape, latent_dim=1, hidden_dims=network.hidden_dims, activation=network.activation,
        kind=network.kind, normalization=network.normalization, spectral_norm=network.spectral_norm,
    )
    return build_encoder(encoder, out_features=1)


# --- the model -----------------------------------------------------------------------------------


class EnergyBasedModel(FoundryModel):
    """The model of the ``ebm`` and ``deep_ebm`` architectures: an energy network and its replay buffer."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.input_shape = tuple(params.input_shape)
        self.modality = params.modality or "vector"
        self.network = energy_network(config.architecture, params)
        self.mcmc, self.buffer_config = params.mcmc, params.sample_buffer
        self.alpha, self.data_noise = params.alpha, params.data_noise
        self.bounds = IMAGE_RANGE if self.modality == "image" else None
        # Persistent SGLD chains: model state saved in every checkpoint (not a parameter: never trained).
        self.register_buffer("replay_buffer", self._uniform(self.buffer_config.capacity, None, None))

    # -- energy and score -------------------------------------------------------------------------
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) of each example: (N,)."""
        return self.network(x).squeeze(-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = -grad_x E(x), shaped like x (gradients only with respect to x)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(self.energy(x).sum(), x)
        return -gradient

    # -- training -----------------------------------------------------------------------------------
    def forward(
        self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """The contrastive loss of a batch (see the module docstring); ``class_labels`` are ignored.

        In training mode the negatives are SGLD samples from the replay buffer, written back to it.
        In eval mode (validation) nothing is drawn or changed: the negatives are the buffer's first
        examples as they are, so the loss compares the data with the model's current chains.
        """
        x = batch_examples(self, self.input_shape, vectors=vectors, pixel_values=pixel_values)
        if self.training:
            negatives = self._persistent_negatives(len(x))
            if self.data_noise:
                x = x + self.data_noise * torch.randn_like(x)
        else:
            negatives = self.replay_buffer[torch.arange(len(x), device=x.device) % len(self.replay_buffer)]
        positive, negative = self.energy(x), self.energy(negatives)
        contrastive = positive.mean() - negative.mean()
        regularization = self.alpha * (positive.square() + negative.square()).mean()
        return ModelOutput(loss=contrastive + regularization, contrastive_loss=contrastive.detach(),
                           energy_l2_loss=regularization.detach())

    def _persistent_negatives(self, count: int) -> torch.Tensor:
        """SGLD from ``count`` buffer chains (each restarted from noise with probability reinit_prob), written back."""
        capacity, device = len(self.replay_buffer), self.replay_buffer.device
        # Distinct chains where the buffer has enough, so that no two results race for one slot.
        chosen = torch.randperm(capacity, device=device)[:count] if count <= capacity else \
            torch.randint(capacity, (count,), device=device)
        restart = torch.rand(count, device=device) < self.buffer_config.reinit_prob
        fresh = self._uniform(count, None, device)
        starts = torch.where(restart.view(-1, *[1] * len(self.input_shape)), fresh, self.replay_buffer[chosen])
        negatives = self._sgld(starts, self.mcmc.n_steps, None)
        self.replay_buffer[chosen] = negatives
        return negatives

    # -- sampling -----------------------------------------------------------------------------------
    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``num_samples`` SGLD samples in the data's layout: (N, D) vectors or (N, C, H, W) images.

        The chains start from the replay buffer's examples (``sample_buffer.sample_from: buffer``,
        picked by ``generator``) or from uniform noise, and run ``mcmc.sample_steps`` steps. The
        buffer is not changed. Every draw comes from ``generator``.
        """
        if conditions is not None:
            raise FoundryError(f"this {self.architecture} model is unconditional; sample without conditions")
        device = generator.device if generator is not None else self.replay_buffer.device
        if self.buffer_config.sample_from == "buffer":
            chosen = torch.randint(len(self.replay_buffer), (num_samples,), generator=generator, device=device)
            starts = self.replay_buffer[chosen.to(self.replay_buffer.device)]
        else:
            starts = self._uniform(num_samples, generator, device).to(self.replay_buffer.device)
        return self._sgld(starts, self.mcmc.sample_steps or self.mcmc.n_steps, generator).float()

    # -- helpers -----------------------------------------------------------------------------------
    def _sgld(self, starts: torch.Tensor, n_steps: int, generator: torch.Generator | None) -> torch.Tensor:
        """The config's SGLD from ``starts``, in eval mode (no batch statistics or power iterations change).

        The weights do not change along a chain, so the spectrally normalized ones (W / sigma) are
        computed once for it (``parametrize.cached``) rather than at every step: the same samples,
        bit for bit, and a quarter less time (64 chains of 60 steps of the digits config: 0.21
        CPU s against 0.28).
        """
        was_training = self.training
        self.eval()
        try:
            with nn.utils.parametrize.cached():
                return langevin(
                    self.energy, starts, n_steps=n_steps, step_size=self.mcmc.step_size,
                    noise_scale=self.mcmc.noise_scale, clip_value=self.mcmc.clip_value, bounds=self.bounds,
                    generator=generator,
                )
        finally:
            self.train(was_training)

    def _uniform(self, count: int, generator: torch.Generator | None, device: torch.device | None) -> torch.Tensor:
        """Fresh chain starts: uniform in [-init_range, init_range] (within the image range for images)."""
        scale = self.buffer_config.init_range
        starts = (torch.rand(count, *self.input_shape, generator=generator, device=device) * 2 - 1) * scale
        return starts.clamp(*self.bounds) if self.bounds is not None else starts



def build(config: ModelConfig) -> EnergyBasedModel:
    # create_model sets the modality (from the data, or its modality= argument) after the config's checks ran.
    problem = config.params.shape_problem()
    if problem is not None:
        raise FoundryError(
            f"model.input_shape of an {config.architecture} for {config.params.modality} data must be {problem}"
        )
    return EnergyBasedModel(config)
