"""Hook implementations of foundry-plugin-diffusion: ``ddpm``, ``diffusion`` and ``score_diffusion``.

Only hooks, and no torch: builders and the exporter are named as ``"module:function"`` and
imported when first used.
"""

from __future__ import annotations

from foundry_plugin_diffusion.config import (
    DDPM_PRESETS,
    DIFFUSION_PRESETS,
    SCORE_PRESETS,
    DDPMConfig,
    DiffusionConfig,
    ScoreDiffusionConfig,
)
from model_foundry.plugin import ArchitectureSchema, Capabilities, Exporter, ModelBuilder, hookimpl

IMAGES_AND_VECTORS = {"modality": "image", "modalities": ("image", "vector"), "sampling": True}
# Samples come from an average of the weights unless a config's extensions section says otherwise;
# the warmup ramps the decay up (0.99 after ~500 steps, 0.9975 after 3000), so short runs average too.
EMA = {"ema": {"decay": 0.9995, "warmup": True, "power": 0.75}}


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="ddpm", config_class=DDPMConfig, family="diffusion", presets=DDPM_PRESETS,
            description="denoising diffusion (Ho et al.): eps prediction, linear or cosine schedule, DDPM/DDIM sampling",
            capabilities=Capabilities(**IMAGES_AND_VECTORS), default_extensions=EMA,
        ),
        ArchitectureSchema(
            name="diffusion", config_class=DiffusionConfig, family="diffusion", presets=DIFFUSION_PRESETS,
            description="diffusion with eps/x0/v prediction, DDPM/DDIM sampling, classifier-free guidance",
            capabilities=Capabilities(**IMAGES_AND_VECTORS, conditional=True), default_extensions=EMA,
        ),
        ArchitectureSchema(
            name="score_diffusion", config_class=ScoreDiffusionConfig, family="diffusion", presets=SCORE_PRESETS,
            description="denoising score matching over noise levels; annealed Langevin or reverse VE-SDE sampling",
            capabilities=Capabilities(**IMAGES_AND_VECTORS, score=True), default_extensions=EMA,
        ),
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [
        ModelBuilder("ddpm", "foundry_plugin_diffusion.model:build"),
        ModelBuilder("diffusion", "foundry_plugin_diffusion.model:build"),
        ModelBuilder("score_diffusion", "foundry_plugin_diffusion.model:build_score"),
    ]


@hookimpl
def foundry_exporters() -> list[Exporter]:
    description = "a diffusers directory (UNet2DModel + DDPMScheduler) that DDPMPipeline.from_pretrained loads"
    return [
        Exporter(name, "diffusers", "foundry_plugin_diffusion.export:to_diffusers", description)
        for name in ("ddpm", "diffusion")
    ]
