"""Hook implementations of foundry-plugin-vae: ``vae``, ``beta_vae``, ``conditional_vae``, ``vq_vae``.

Only hooks, and no torch: each model is named as ``"module:function"`` and imported when a
model is first built.
"""

from __future__ import annotations

from foundry_plugin_vae.config import (
    VQ_PRESETS,
    BetaVAEConfig,
    ConditionalVAEConfig,
    VAEConfig,
    VQVAEConfig,
    gaussian_presets,
)
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, hookimpl


def _capabilities(conditional: bool = False) -> Capabilities:
    return Capabilities(
        modality="image", modalities=("image", "vector"), sampling=True, likelihood="bound", latent=True,
        conditional=conditional,
    )


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="vae", config_class=VAEConfig, family="vae", presets=gaussian_presets(VAEConfig), capabilities=_capabilities(),
            description="variational autoencoder: Gaussian latent, MLP or conv networks, ELBO with kl_weight",
        ),
        ArchitectureSchema(
            name="beta_vae", config_class=BetaVAEConfig, family="vae", presets=gaussian_presets(BetaVAEConfig),
            capabilities=_capabilities(), description="beta-VAE: reconstruction + beta * KL",
        ),
        ArchitectureSchema(
            name="conditional_vae", config_class=ConditionalVAEConfig, family="vae",
            presets=gaussian_presets(ConditionalVAEConfig),
            capabilities=_capabilities(conditional=True),
            description="class-conditional VAE: encoder and decoder see the class label (sample conditions)",
        ),
        ArchitectureSchema(
            name="vq_vae", config_class=VQVAEConfig, family="vae", presets=VQ_PRESETS, capabilities=_capabilities(),
            description="vector-quantised VAE: codebook (optional EMA updates), commitment loss, autoregressive code prior",
        ),
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [
        ModelBuilder("vae", "foundry_plugin_vae.model:build"),
        ModelBuilder("beta_vae", "foundry_plugin_vae.model:build"),
        ModelBuilder("conditional_vae", "foundry_plugin_vae.model:build"),
        ModelBuilder("vq_vae", "foundry_plugin_vae.vq_vae:build"),
    ]
