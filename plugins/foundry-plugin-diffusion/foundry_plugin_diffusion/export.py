"""``foundry export CKPT --to diffusers OUT``: a directory diffusers' own ``DDPMPipeline`` loads.

The UNet is diffusers' ``UNet2DModel`` already, so it is saved as it is (``unet/``), beside a
``DDPMScheduler`` (``scheduler/``) with the model's schedule, prediction type and clipping:
``DDPMPipeline.from_pretrained(OUT)(batch_size=N, generator=torch.Generator().manual_seed(S))``
then draws the samples ``foundry sample`` draws with the DDPM sampler over all T steps and the
same seed (tested), and ``DDIMPipeline`` loads it too.
"""

from __future__ import annotations

from typing import Any

from foundry_plugin_diffusion.backbones import UNetBackbone
from foundry_plugin_diffusion.model import DiffusionModel
from model_foundry.plugin import FoundryError


def scheduler_config(model: DiffusionModel) -> dict[str, Any]:
    """The DDPMScheduler options that reproduce the model's forward process and sampling steps."""
    schedule = model.config.params.noise_schedule
    return {
        "num_train_timesteps": schedule.num_timesteps,
        "beta_schedule": "linear" if schedule.schedule_type == "linear" else "squaredcos_cap_v2",
        "beta_start": schedule.beta_start,
        "beta_end": schedule.beta_end,
        "prediction_type": model.prediction_type,
        "clip_sample": model.clip_sample,
        "variance_type": "fixed_small",
        "timestep_spacing": "leading",
    }


def to_diffusers(model: DiffusionModel, directory: str, tokenizer: Any = None) -> None:
    """Write ``unet/``, ``scheduler/`` and ``model_index.json`` of a diffusers DDPMPipeline into ``directory``."""
    from diffusers import DDPMPipeline, DDPMScheduler

    if not isinstance(model.network, UNetBackbone):
        raise FoundryError(f"this {model.architecture} model has an mlp backbone; diffusers' pipelines run a "
                           "UNet2DModel, so only models with backbone.type unet can be exported to diffusers")
    if model.num_classes is not None:
        raise FoundryError(f"this {model.architecture} model is class-conditional (num_classes {model.num_classes}); "
                           "diffusers' DDPMPipeline samples unconditional models only")
    pipeline = DDPMPipeline(unet=model.network.unet, scheduler=DDPMScheduler(**scheduler_config(model)))
    pipeline.save_pretrained(directory, safe_serialization=True)
