"""The GAN model shared by ``gan``, ``dcgan``, ``wgan`` and ``lsgan``.

A generator G maps standard normal noise z to an example, a discriminator D maps an example
to one real score, and the two are trained against each other with one optimizer each
(``parameter_groups``) by the custom step in :mod:`foundry_plugin_gan.training`, which calls
``forward(..., part=...)`` for each player:

* ``part="discriminator"``: D's loss on the real batch and on as many generated examples,
  detached from G, plus the gradient penalty when the config has one;
* ``part="generator"``: G's loss on fresh generated examples, through D.

The losses are in :mod:`foundry_plugin_gan.losses`. ``sample`` runs G on noise drawn from the
caller's generator.
"""

from __future__ import annotations

import torch

from foundry_plugin_gan.config import RANK_OF_MODALITY, shape_of
from foundry_plugin_gan.losses import LOSSES, gradient_penalty
from foundry_plugin_gan.training import DISCRIMINATOR, GENERATOR
from model_foundry.plugin import (
    ConfigError,
    FoundryError,
    FoundryModel,
    ModelConfig,
    ModelOutput,
    Problem,
    batch_examples,
    build_decoder,
    build_encoder,
)

# Training draws noise from torch's global RNG (per process, restored on resume); the validation
# loss from this seed, so that evaluating the same weights twice agrees and evaluation draws
# nothing from the training run's random state.
EVALUATION_SEED = 0


# The fields that set the shape of one example (the generator's output is the discriminator's input).
SHAPE_FIELDS = "model.generator.output_shape and model.discriminator.input_shape"


class GAN(FoundryModel):
    """The model of every GAN architecture; see the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.example_shape = tuple(params.generator.output_shape)
        self.latent_dim = params.generator.latent_dim
        self.generator = build_decoder(params.generator)
        self.discriminator = build_encoder(params.discriminator, 1)
        self.loss = LOSSES[params.loss]
        self.gradient_penalty_weight = params.gradient_penalty_weight

    def parameter_groups(self) -> dict[str, object]:
        return {GENERATOR: self.generator.parameters(), DISCRIMINATOR: self.discriminator.parameters()}

    def forward(
        self, pixel_values: torch.Tensor | None = None, vectors: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None, part: str = DISCRIMINATOR,
    ) -> ModelOutput:
        """One player's loss on a batch of real examples (``class_labels`` are not conditioned on)."""
        real = batch_examples(self, self.example_shape, SHAPE_FIELDS, pixel_values=pixel_values, vectors=vectors)
        rng = None if self.training else torch.Generator(real.device).manual_seed(EVALUATION_SEED)
        noise = torch.randn(real.shape[0], self.latent_dim, device=real.device, dtype=real.dtype, generator=rng)
        if part == GENERATOR:
            return ModelOutput(loss=self.loss.generator(self.discriminate(self.generator(noise))))
        if part != DISCRIMINATOR:
            raise ValueError(f"part must be {GENERATOR!r} or {DISCRIMINATOR!r}, got {part!r}")
        fake = self.generator(noise).detach()
        loss = self.loss.discriminator(self.discriminate(real), self.discriminate(fake))
        if not self.gradient_penalty_weight:
            return ModelOutput(loss=loss)
        penalty = gradient_penalty(self.discriminate, real, fake, self.gradient_penalty_weight, rng)
        return ModelOutput(loss=loss + penalty, gradient_penalty_loss=penalty)

    def discriminate(self, examples: torch.Tensor) -> torch.Tensor:
        """D's score of each example, (N,)."""
        return self.discriminator(examples).squeeze(-1)

    @torch.no_grad()
    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``num_samples`` examples G makes from noise drawn from ``generator`` (on the generator's device)."""
        if conditions is not None:
            raise FoundryError(f"a {self.architecture} is unconditional; sample without conditions")
        weights = next(self.generator.parameters())
        device = generator.device if generator is not None else weights.device
        noise = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        return self.generator(noise.to(weights.device, weights.dtype)).float()

def build(config: ModelConfig) -> GAN:
    # create_model sets the modality (from the data, or its modality= argument) after the config's checks ran.
    modality, shape = config.params.modality, list(config.params.generator.output_shape)
    if modality is not None and len(shape) != RANK_OF_MODALITY[modality]:
        raise ConfigError(Problem(
            f"must be {shape_of(modality)} for {modality} data, not {shape}; set it and model.discriminator.input_shape "
            "to the data's example shape", "model.generator.output_shape",
        ))
    return GAN(config)
