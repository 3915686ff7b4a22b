"""The config classes and presets of ``gan``, ``dcgan``, ``wgan`` and ``lsgan``.

No torch here: ``foundry list`` imports this module through the plugin's hooks.

A GAN is a ``generator`` block (the core's shared :class:`DecoderConfig`: noise of
``latent_dim`` numbers -> an example of ``output_shape``) and a ``discriminator`` block (an
:class:`EncoderConfig`: an example of ``input_shape`` -> one real score; its ``latent_dim`` is
not used), an adversarial ``loss``, ``n_critic`` discriminator steps per generator step and an
optional WGAN-GP ``gradient_penalty_weight``. The four architectures share these fields and
differ in their defaults, so that a typed config object names its architecture
(``create_model(WGANConfig())`` builds a ``wgan``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.plugin import (
    Activation,
    DecoderConfig,
    EncoderConfig,
    NetworkKind,
    Normalization,
    OutputActivation,
    Presets,
    non_negative,
    option,
    positive,
)

Loss = Literal["non_saturating", "least_squares", "wasserstein"]
RANK_OF_MODALITY = {"vector": 1, "image": 3}


@attrs.frozen
class GeneratorConfig(DecoderConfig):
    """The generator: the shared decoder block, with a GAN's defaults (an MLP with a tanh output)."""

    latent_dim: int = option(32, doc="size of the noise vector z ~ N(0, I) it maps to an example", validator=positive)
    hidden_dims: tuple[int, ...] = option(
        (128, 256), doc="widths in data-flow order: channels of each stride-2 upsampling (conv), or layer sizes (mlp)"
    )
    kind: Optional[NetworkKind] = option("mlp", doc="mlp or conv; null: conv for images, mlp for vectors")
    output_activation: OutputActivation = option(
        "tanh", doc="applied to the output: tanh (images in [-1, 1]), sigmoid, or none (vectors)"
    )


@attrs.frozen
class DiscriminatorConfig(EncoderConfig):
    """The discriminator (critic): the shared encoder block mapping an example to one real score."""

    latent_dim: int = option(16, doc="not used: a discriminator's output is one score", validator=positive)
    hidden_dims: tuple[int, ...] = option(
        (256, 128), doc="widths in data-flow order: channels of each stride-2 convolution (conv), or layer sizes (mlp)"
    )
    activation: Activation = option("leaky_relu", doc="activation between layers (leaky_relu: slope 0.2)")
    kind: Optional[NetworkKind] = option("mlp", doc="mlp or conv; null: conv for images, mlp for vectors")


@attrs.frozen
class ConvGeneratorConfig(GeneratorConfig):
    """DCGAN's generator: transposed convolutions with batch normalization."""

    hidden_dims: tuple[int, ...] = option(
        (64, 32), doc="widths in data-flow order: channels of each stride-2 upsampling (conv), or layer sizes (mlp)"
    )
    kind: Optional[NetworkKind] = option("conv", doc="mlp or conv; null: conv for images, mlp for vectors")
    normalization: Normalization = option("batch", doc="after each hidden layer: none, batch, layer or group")


@attrs.frozen
class ConvDiscriminatorConfig(DiscriminatorConfig):
    """DCGAN's discriminator: stride-2 convolutions."""

    hidden_dims: tuple[int, ...] = option(
        (32, 64), doc="widths in data-flow order: channels of each stride-2 convolution (conv), or layer sizes (mlp)"
    )
    kind: Optional[NetworkKind] = option("conv", doc="mlp or conv; null: conv for images, mlp for vectors")


GENERATOR_DOC = "the generator: noise of latent_dim numbers -> an example of output_shape"
DISCRIMINATOR_DOC = "the discriminator (critic): an example of input_shape -> one real score"
LOSS_DOC = "the adversarial loss: non_saturating, least_squares or wasserstein"
N_CRITIC_DOC = "the generator is updated every n_critic-th training step (the discriminator every step)"
PENALTY_DOC = "lambda of the WGAN-GP gradient penalty lambda * E[(||grad D(x_hat)|| - 1)^2]; 0: none"


@attrs.frozen
class GANConfig:
    """A generative adversarial network (``gan``): MLPs and the non-saturating loss by default."""

    modality: Optional[Literal["image", "vector"]] = option(
        None, doc="the data modeled: image or vector; null: the data section's (image without one)"
    )
    generator: GeneratorConfig = option(factory=GeneratorConfig, doc=GENERATOR_DOC)
    discriminator: DiscriminatorConfig = option(factory=DiscriminatorConfig, doc=DISCRIMINATOR_DOC)
    loss: Loss = option("non_saturating", doc=LOSS_DOC)
    n_critic: int = option(1, doc=N_CRITIC_DOC, validator=positive)
    gradient_penalty_weight: float = option(0.0, doc=PENALTY_DOC, validator=non_negative)
    name: Optional[str] = option(None, doc="a label for this model (accepted for configs that carry one)")

    def validate(self) -> Iterator[tuple[str, str]]:
        output_shape, input_shape = tuple(self.generator.output_shape), tuple(self.discriminator.input_shape)
        if input_shape != output_shape:
            yield ("generator.output_shape",
                   f"is {list(output_shape)}, and discriminator.input_shape is {list(input_shape)}: the discriminator judges "
                   "the generator's examples, so both must be the data's example shape")
        if self.modality is not None and len(output_shape) != RANK_OF_MODALITY[self.modality]:
            yield "generator.output_shape", f"must be {shape_of(self.modality)} for {self.modality} data, got {list(output_shape)}"
        if self.loss == "wasserstein" and not self.gradient_penalty_weight and not self.discriminator.spectral_norm:
            yield ("loss", "the wasserstein loss needs a Lipschitz critic: set gradient_penalty_weight (10 is usual) "
                           "or discriminator.spectral_norm: true")
        if self.gradient_penalty_weight and self.discriminator.normalization == "batch":
            yield ("discriminator.normalization",
                   "batch normalization makes each score depend on the whole batch, which the gradient penalty "
                   "assumes it does not; use layer, group or none")


def shape_of(modality: str) -> str:
    return "[C, H, W]" if modality == "image" else "[D]"


@attrs.frozen
class DCGANConfig(GANConfig):
    """A deep convolutional GAN (``dcgan``, Radford et al. 2016): stride-2 (transposed) convolutions."""

    generator: ConvGeneratorConfig = option(factory=ConvGeneratorConfig, doc=GENERATOR_DOC)
    discriminator: ConvDiscriminatorConfig = option(factory=ConvDiscriminatorConfig, doc=DISCRIMINATOR_DOC)


@attrs.frozen
class WGANConfig(GANConfig):
    """A Wasserstein GAN with gradient penalty (``wgan``, Gulrajani et al. 2017)."""

    loss: Loss = option("wasserstein", doc=LOSS_DOC)
    n_critic: int = option(5, doc=N_CRITIC_DOC, validator=positive)
    gradient_penalty_weight: float = option(10.0, doc=PENALTY_DOC, validator=non_negative)


@attrs.frozen
class LSGANConfig(GANConfig):
    """A least-squares GAN (``lsgan``, Mao et al. 2017)."""

    loss: Loss = option("least_squares", doc=LOSS_DOC)


# --- presets: 8x8 images (the digits); set the two shapes for other data ---------------------

DIGITS = (1, 8, 8)


def presets_of(config_class: type[GANConfig]) -> Presets:
    """The presets of a GAN architecture: MLPs (``gan``, ``wgan``, ``lsgan``) or convolutions (``dcgan``)."""
    presets = Presets()
    conv = issubclass(config_class, DCGANConfig)

    def networks(latent: int, generator_dims: tuple[int, ...], discriminator_dims: tuple[int, ...],
                 generator_normalization: str = "none") -> GANConfig:
        default = config_class()
        generator = attrs.evolve(
            default.generator, output_shape=DIGITS, latent_dim=latent, hidden_dims=generator_dims, activation="relu",
            normalization=generator_normalization, output_activation="tanh",
        )
        discriminator = attrs.evolve(
            default.discriminator, input_shape=DIGITS, hidden_dims=discriminator_dims, activation="leaky_relu"
        )
        return attrs.evolve(default, generator=generator, discriminator=discriminator)

    @presets.register("tiny")
    def tiny() -> GANConfig:
        return networks(8, (16, 8), (8, 16)) if conv else networks(8, (32,), (32,))

    @presets.register("small")
    def small() -> GANConfig:
        return networks(32, (64, 32), (32, 64), "batch") if conv else networks(32, (128, 256), (256, 128))

    @presets.register("base")
    def base() -> GANConfig:
        return networks(64, (256, 128, 64), (64, 128, 256), "batch") if conv else networks(64, (256, 512), (512, 256))

    return presets


CONFIG_CLASSES = {"gan": GANConfig, "dcgan": DCGANConfig, "wgan": WGANConfig, "lsgan": LSGANConfig}
