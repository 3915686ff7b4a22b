"""Hook implementations of foundry-plugin-gan: ``gan``, ``dcgan``, ``wgan`` and ``lsgan``.

Only hooks, and no torch: the model and the training step are named as ``"module:function"``
and imported when first used.
"""

from __future__ import annotations

from foundry_plugin_gan.config import CONFIG_CLASSES, presets_of
from model_foundry.plugin import ArchitectureSchema, Capabilities, ModelBuilder, TrainingStep, hookimpl

DESCRIPTIONS = {
    "gan": "generative adversarial network: MLP generator and discriminator, non-saturating loss",
    "dcgan": "deep convolutional GAN: stride-2 (transposed) convolutions, non-saturating loss",
    "wgan": "Wasserstein GAN with gradient penalty (WGAN-GP), n_critic critic steps per generator step",
    "lsgan": "least-squares GAN: the discriminator regresses real to 1 and fake to 0",
}
CAPABILITIES = Capabilities(modality="image", modalities=("image", "vector"), sampling=True)


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(name=name, config_class=CONFIG_CLASSES[name], family="gan", description=description,
                           presets=presets_of(CONFIG_CLASSES[name]), capabilities=CAPABILITIES)
        for name, description in DESCRIPTIONS.items()
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [ModelBuilder(name, "foundry_plugin_gan.model:build") for name in DESCRIPTIONS]


@hookimpl
def foundry_training_steps() -> list[TrainingStep]:
    return [TrainingStep(name, "foundry_plugin_gan.training:adversarial_step") for name in DESCRIPTIONS]
