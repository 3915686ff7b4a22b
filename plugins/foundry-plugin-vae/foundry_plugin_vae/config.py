"""Config classes and presets of the VAE architectures: ``vae``, ``beta_vae``, ``conditional_vae``, ``vq_vae``.

No torch here: ``plugin.py`` imports this module when ``foundry list`` runs. The ``encoder`` and
``decoder`` blocks are the core's shared network configs (:mod:`model_foundry.networks.config`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.plugin import DecoderConfig, EncoderConfig, Presets, non_negative, option, positive

RANK_OF_MODALITY = {"vector": 1, "image": 3}


def at_least_two(_instance: object, _attribute: object, value: int) -> None:
    if value < 2:
        raise ValueError(f"must be >= 2, got {value}")


@attrs.frozen
class LatentVariableConfig:
    """Fields every VAE architecture shares: the data, the networks and the decoder's likelihood."""

    modality: Optional[Literal["vector", "image"]] = option(
        None, doc="the data modeled: vector or image; null: the data section's (image without one)"
    )
    encoder: EncoderConfig = option(factory=EncoderConfig, doc="the encoder network (input_shape is the data's shape)")
    decoder: DecoderConfig = option(factory=DecoderConfig, doc="the decoder network (output_shape is the data's shape)")
    likelihood: Literal["discretized_logistic", "gaussian"] = option(
        "discretized_logistic",
        doc="p(x|z) per value: discretized_logistic over `levels` evenly spaced values in [-1, 1] (quantised images), "
        "or gaussian (continuous data)",
    )
    levels: int = option(17, doc="values per dimension of quantised data (digits 17, 8-bit images 256)", validator=at_least_two)
    min_scale: float = option(
        0.01, doc="smallest scale of p(x|z), so that a Gaussian cannot collapse onto training points", validator=positive
    )
    sample_noise: bool = option(
        False, doc="samples include the noise of p(x|z) (a faithful draw); false: the decoder's mean (the usual picture)"
    )
    name: Optional[str] = option(None, doc="a label for this model (accepted for configs that carry one)")

    def validate(self) -> Iterator[tuple[str, str]]:
        shape = tuple(self.encoder.input_shape)
        if tuple(self.decoder.output_shape) != shape:
            yield "decoder.output_shape", (
                f"must equal encoder.input_shape {list(shape)} (both are the data's shape), got {list(self.decoder.output_shape)}"
            )
        if self.modality is not None and len(shape) != RANK_OF_MODALITY[self.modality]:
            expected = "[C, H, W]" if self.modality == "image" else "[D]"
            yield "encoder.input_shape", f"{self.modality} data needs a shape {expected}, got {list(shape)}"

    def shape_problem(self) -> str | None:
        """Why the networks' shapes cannot hold examples of ``modality`` (None when they can)."""
        shape = list(self.encoder.input_shape)
        if self.modality is None or len(shape) == RANK_OF_MODALITY[self.modality]:
            return None
        expected = "[C, H, W]" if self.modality == "image" else "[D]"
        return f"model.encoder.input_shape and model.decoder.output_shape must be {expected} for {self.modality} data, not {shape}"


@attrs.frozen
class GaussianLatentConfig(LatentVariableConfig):
    """A Gaussian posterior q(z|x) = N(mu(x), diag sigma(x)^2) and prior N(0, I)."""

    log_prob_samples: int = option(
        64, doc="K, importance samples of the bound log_prob reports (IWAE; K = 1 is the ELBO)", validator=positive
    )

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from super().validate()
        if self.decoder.latent_dim != self.encoder.latent_dim:
            yield "decoder.latent_dim", f"must equal encoder.latent_dim ({self.encoder.latent_dim}), got {self.decoder.latent_dim}"


@attrs.frozen
class VAEConfig(GaussianLatentConfig):
    """``vae``: loss = -E_q log p(x|z) + kl_weight * KL(q(z|x) || p(z))."""

    kl_weight: float = option(1.0, doc="weight of the KL term (1: the ELBO)", validator=non_negative)


@attrs.frozen
class BetaVAEConfig(GaussianLatentConfig):
    """``beta_vae``: loss = -E_q log p(x|z) + beta * KL(q(z|x) || p(z))."""

    beta: float = option(4.0, doc="weight of the KL term (beta > 1 favours disentangled latents)", validator=non_negative)


@attrs.frozen
class ConditionalVAEConfig(GaussianLatentConfig):
    """``conditional_vae``: q(z|x, y) and p(x|z, y), with y a class label (one-hot)."""

    num_classes: int = option(10, doc="classes to condition on (class_labels 0..num_classes-1)", validator=positive)
    kl_weight: float = option(1.0, doc="weight of the KL term (1: the ELBO)", validator=non_negative)


@attrs.frozen
class VQVAEConfig(LatentVariableConfig):
    """``vq_vae``: the encoder's output is cut into code vectors, each replaced by its nearest codebook entry.

    ``encoder.latent_dim`` (= ``decoder.latent_dim``) is the whole latent: ``latent_dim / code_dim``
    code vectors of ``code_dim`` numbers. An autoregressive prior over the codes, trained beside
    the autoencoder on the (detached) codes, draws samples and gives the bound
    log p(x) >= log p(x | codes(x)) + log p(codes(x)).
    """

    codebook_size: int = option(64, doc="entries in the codebook (K)", validator=at_least_two)
    code_dim: int = option(4, doc="numbers per code vector (the codebook's width)", validator=positive)
    commitment_weight: float = option(
        0.25, doc="weight of the commitment loss ||z_e - sg(e)||^2 that keeps the encoder near its codes",
        validator=non_negative,
    )
    ema_updates: bool = option(False, doc="update the codebook by moving averages of its assigned encodings (no codebook loss)")
    ema_decay: float = option(0.99, doc="decay of the codebook's moving averages (ema_updates)", validator=positive)
    prior_hidden: int = option(128, doc="width of the autoregressive prior over codes (a GRU)", validator=positive)

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from super().validate()
        if self.decoder.latent_dim != self.encoder.latent_dim:
            yield "decoder.latent_dim", f"must equal encoder.latent_dim ({self.encoder.latent_dim}), got {self.decoder.latent_dim}"
        elif self.encoder.latent_dim % self.code_dim:
            yield "code_dim", (
                f"must divide encoder.latent_dim ({self.encoder.latent_dim}): the latent is cut into code vectors of code_dim"
            )
        if self.ema_decay >= 1:
            yield "ema_decay", f"must be < 1, got {self.ema_decay}"

    @property
    def num_codes(self) -> int:
        """Code vectors per example."""
        return self.encoder.latent_dim // self.code_dim


def with_networks(config: LatentVariableConfig, latent: int, encoder_dims: tuple[int, ...]) -> LatentVariableConfig:
    """``config`` with 8x8 image networks (the digits): the decoder mirrors the encoder's widths."""
    encoder = attrs.evolve(config.encoder, input_shape=(1, 8, 8), latent_dim=latent, hidden_dims=encoder_dims)
    decoder = attrs.evolve(config.decoder, output_shape=(1, 8, 8), latent_dim=latent, hidden_dims=encoder_dims[::-1])
    return attrs.evolve(config, encoder=encoder, decoder=decoder)


def gaussian_presets(config_class: type[GaussianLatentConfig]) -> Presets:
    """The presets of ``vae``, ``beta_vae`` and ``conditional_vae``."""
    presets = Presets()

    @presets.register("tiny")
    def tiny() -> GaussianLatentConfig:
        return with_networks(config_class(), 4, (8, 16))

    @presets.register("small")
    def small() -> GaussianLatentConfig:
        return with_networks(config_class(), 16, (32, 64))

    @presets.register("base")
    def base() -> GaussianLatentConfig:
        return with_networks(config_class(), 32, (64, 128, 256))

    return presets


VQ_PRESETS = Presets()


@VQ_PRESETS.register("tiny")
def vq_tiny() -> VQVAEConfig:
    return with_networks(VQVAEConfig(codebook_size=8, code_dim=2, prior_hidden=16), 8, (8, 16))


@VQ_PRESETS.register("small")
def vq_small() -> VQVAEConfig:
    return with_networks(VQVAEConfig(codebook_size=64, code_dim=4, prior_hidden=128), 32, (32, 64))


@VQ_PRESETS.register("base")
def vq_base() -> VQVAEConfig:
    return with_networks(VQVAEConfig(codebook_size=256, code_dim=8, prior_hidden=256), 64, (64, 128, 256))
