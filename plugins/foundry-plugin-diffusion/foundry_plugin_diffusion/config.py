"""Config classes and presets of ``ddpm``, ``diffusion`` and ``score_diffusion``.

The field names are the ones users bring from the generative-model factories: ``DDPMConfig``
with ``input_shape``, ``backbone`` (``in_channels``, ``out_channels``, ``base_channels``,
``channel_mults``) and ``noise_schedule`` (``schedule_type``, ``num_timesteps``,
``beta_start``, ``beta_end``). No torch here: ``foundry list`` imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.plugin import Presets, non_negative, option, positive, probability

# The rank of one example of each modality: (D,) vectors, (C, H, W) images.
RANK_OF_MODALITY = {"vector": 1, "image": 3}


def _open_unit(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"must be in (0, 1), got {value!r}")


@attrs.frozen
class NoiseScheduleConfig:
    """The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), t = 0 .. num_timesteps - 1."""

    schedule_type: Literal["linear", "cosine"] = option(
        "linear", doc="betas linear from beta_start to beta_end (Ho et al.), or alpha_bar a squared cosine "
                      "(Nichol & Dhariwal; diffusers' squaredcos_cap_v2, betas capped at 0.999)")
    num_timesteps: int = option(1000, doc="diffusion steps T of training", validator=positive)
    beta_start: float = option(1e-4, doc="beta of the first step (linear schedule)", validator=_open_unit)
    beta_end: float = option(0.02, doc="beta of the last step (linear schedule)", validator=_open_unit)

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.schedule_type == "linear" and self.beta_end <= self.beta_start:
            yield "beta_end", f"must be > beta_start ({self.beta_start}), got {self.beta_end}"


@attrs.frozen
class BackboneConfig:
    """The denoising network: diffusers' UNet2DModel for images, a residual MLP for vectors.

    ``UNetBackboneConfig`` is this class under the name the factories use.
    """

    type: Optional[Literal["unet", "mlp"]] = option(
        None, doc="unet (images) or mlp (vectors, or images flattened); null: unet for images, mlp for vectors")
    in_channels: Optional[int] = option(None, doc="image channels in; null: input_shape[0]", validator=positive)
    out_channels: Optional[int] = option(None, doc="image channels out (= in_channels); null: input_shape[0]",
                                         validator=positive)
    base_channels: int = option(32, doc="UNet channels at full resolution", validator=positive)
    channel_mults: tuple[int, ...] = option(
        (1, 2), doc="UNet channel multiplier per resolution; each level after the first halves the image")
    layers_per_block: int = option(1, doc="UNet residual blocks per resolution", validator=positive)
    attention: bool = option(False, doc="self-attention in the UNet's lowest-resolution blocks")
    norm_groups: int = option(8, doc="UNet group-norm groups (divides every level's channels)", validator=positive)
    hidden_dim: int = option(128, doc="MLP width", validator=positive)
    num_layers: int = option(3, doc="MLP residual blocks", validator=positive)

    def validate(self) -> Iterator[tuple[str, str]]:
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            yield "channel_mults", f"must be a non-empty list of integers >= 1, got {list(self.channel_mults)}"
            return
        bad = [self.base_channels * m for m in self.channel_mults if (self.base_channels * m) % self.norm_groups]
        if bad:
            yield "norm_groups", (f"must divide every level's channels (base_channels * channel_mults = "
                                  f"{[self.base_channels * m for m in self.channel_mults]}), and {bad[0]} is not "
                                  f"a multiple of {self.norm_groups}")


UNetBackboneConfig = BackboneConfig


def shape_problems(config: "DenoiserConfig") -> Iterator[tuple[str, str]]:
    """Where ``input_shape`` and ``backbone`` do not fit each other, the modality or the UNet."""
    shape, backbone = config.input_shape, config.backbone
    if not shape or any(size < 1 for size in shape):
        yield "input_shape", f"sizes must be >= 1, got {list(shape)}"
        return
    ranks = {config.modality: RANK_OF_MODALITY[config.modality]} if config.modality else RANK_OF_MODALITY
    if len(shape) not in ranks.values():
        expected = {"vector": "[D]", "image": "[channels, height, width]"}
        yield "input_shape", f"must be {' or '.join(f'{expected[m]} ({m}s)' for m in ranks)}, not {list(shape)}"
        return
    if config.backbone_type() == "mlp":
        return
    if len(shape) != 3:
        yield "backbone.type", f"a unet denoises images [channels, height, width]; input_shape is {list(shape)}: use mlp"
        return
    channels = shape[0]
    for key in ("in_channels", "out_channels"):
        value = getattr(backbone, key)
        if value is not None and value != channels:
            yield f"backbone.{key}", f"must be input_shape[0] = {channels} (the image's channels), got {value}"
    downsamplings = len(backbone.channel_mults) - 1
    smallest = min(shape[1:]) / 2**downsamplings
    if smallest < 1:
        yield "backbone.channel_mults", (
            f"{len(backbone.channel_mults)} levels halve a {shape[1]}x{shape[2]} image {downsamplings} times, "
            f"to less than one pixel; use at most {min(shape[1:]).bit_length()} levels")
    elif any(size % 2**downsamplings for size in shape[1:]):
        yield "input_shape", (
            f"the UNet halves the image {downsamplings} times ({len(backbone.channel_mults)} channel_mults), so "
            f"height and width must be multiples of {2**downsamplings}, got {shape[1]}x{shape[2]}")


@attrs.frozen
class DenoiserConfig:
    """What every architecture of the plugin has: the data's modality and shape, and the network."""

    modality: Optional[Literal["vector", "image"]] = option(
        None, doc="the data modeled: image or vector; null: the data section's (image without one)")
    input_shape: tuple[int, ...] = option(
        (1, 8, 8), doc="one example's shape: [channels, height, width] for images, [D] for vectors")
    backbone: BackboneConfig = option(factory=BackboneConfig, doc="the network (denoiser, or score model)")

    def backbone_type(self) -> str:
        return self.backbone.type or ("unet" if len(self.input_shape) == 3 else "mlp")


@attrs.frozen
class DDPMConfig(DenoiserConfig):
    """Denoising diffusion (Ho et al. 2020): a network predicts the noise eps added to x_0 at step t."""

    noise_schedule: NoiseScheduleConfig = option(factory=NoiseScheduleConfig, doc="the forward process")
    sampler: Literal["ddpm", "ddim"] = option(
        "ddpm", doc="sampling: ancestral DDPM steps, or DDIM (deterministic with eta 0)")
    sampling_steps: Optional[int] = option(
        None, doc="denoising steps when sampling (evenly spaced over the T steps); null: num_timesteps",
        validator=positive)
    eta: float = option(0.0, doc="DDIM: share of the ancestral noise (0 deterministic, 1 like DDPM)",
                        validator=non_negative)
    clip_sample: Optional[bool] = option(
        None, doc="clip the predicted x_0 to [-1, 1] at each step; null: for images (scaled to [-1, 1]) only")

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from shape_problems(self)
        steps = self.sampling_steps
        if steps is not None and steps > self.noise_schedule.num_timesteps:
            yield "sampling_steps", f"must be <= noise_schedule.num_timesteps ({self.noise_schedule.num_timesteps}), got {steps}"
        if self.eta and self.sampler != "ddim":
            yield "eta", f"is a DDIM option, and sampler is {self.sampler!r}"


@attrs.frozen
class DiffusionConfig(DDPMConfig):
    """The general form: eps, x_0 or v prediction, DDPM or DDIM sampling, classifier-free guidance."""

    prediction_type: Literal["epsilon", "sample", "v_prediction"] = option(
        "epsilon", doc="what the network predicts: the noise eps, the clean sample x_0, or "
                       "v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (diffusers' names)")
    num_classes: Optional[int] = option(
        None, doc="classes to condition on (class_labels 0..num_classes-1); null: unconditional", validator=positive)
    label_dropout: float = option(
        0.1, doc="share of training labels replaced by the 'no class' label, which trains the unconditional "
                 "model guidance needs", validator=probability)
    guidance_scale: float = option(
        1.0, doc="classifier-free guidance w: eps = eps_uncond + w (eps_cond - eps_uncond); 1: no guidance",
        validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from super().validate()
        if self.guidance_scale != 1.0 and self.num_classes is None:
            yield "guidance_scale", (f"guidance needs a conditional model, and num_classes is null; set num_classes "
                                     f"or guidance_scale: 1.0 (got {self.guidance_scale})")
        elif self.guidance_scale != 1.0 and self.label_dropout == 0:
            yield "label_dropout", ("must be > 0 with guidance_scale != 1: the unconditional model guidance "
                                    "subtracts is trained on the dropped labels")


@attrs.frozen
class ScoreDiffusionConfig(DenoiserConfig):
    """Denoising score matching over noise levels sigma (Song & Ermon 2019; the VE SDE of Song et al. 2021)."""

    sigma_min: float = option(0.01, doc="smallest noise level", validator=positive)
    sigma_max: float = option(10.0, doc="largest noise level (about the largest distance between examples)",
                              validator=positive)
    num_noise_levels: int = option(10, doc="annealed Langevin: geometric noise levels from sigma_max to sigma_min",
                                   validator=positive)
    sampler: Literal["langevin", "sde"] = option(
        "langevin", doc="annealed Langevin dynamics, or the reverse VE SDE (predictor-corrector)")
    langevin_steps: int = option(20, doc="annealed Langevin: steps per noise level", validator=positive)
    langevin_step_size: float = option(
        2e-5, doc="annealed Langevin: epsilon; the step at level sigma_i is epsilon * sigma_i^2 / sigma_min^2",
        validator=positive)
    sde_steps: int = option(500, doc="reverse SDE: predictor steps from sigma_max to sigma_min", validator=positive)
    corrector_steps: int = option(1, doc="reverse SDE: Langevin corrector steps after each predictor step",
                                  validator=non_negative)
    snr: float = option(0.16, doc="reverse SDE: the corrector's signal-to-noise ratio", validator=positive)
    denoise: bool = option(True, doc="end with one denoising step x + sigma_min^2 score(x) (Tweedie's formula)")

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from shape_problems(self)
        if self.sigma_max <= self.sigma_min:
            yield "sigma_max", f"must be > sigma_min ({self.sigma_min}), got {self.sigma_max}"


DDPM_PRESETS = Presets()
DIFFUSION_PRESETS = Presets()
SCORE_PRESETS = Presets()
DIGITS = (1, 8, 8)


def _backbone(size: str) -> BackboneConfig:
    if size == "tiny":
        return BackboneConfig(base_channels=8, channel_mults=(1, 2), norm_groups=4, hidden_dim=32, num_layers=2)
    if size == "small":
        return BackboneConfig(base_channels=32, channel_mults=(1, 2), hidden_dim=128, num_layers=3)
    return BackboneConfig(base_channels=64, channel_mults=(1, 2, 2), attention=True, hidden_dim=256, num_layers=4)


@DDPM_PRESETS.register("tiny")
def ddpm_tiny() -> DDPMConfig:
    schedule = NoiseScheduleConfig(num_timesteps=50, beta_start=1e-3, beta_end=0.2)
    return DDPMConfig(input_shape=DIGITS, backbone=_backbone("tiny"), noise_schedule=schedule, sampling_steps=10)


@DDPM_PRESETS.register("small")
def ddpm_small() -> DDPMConfig:
    return DDPMConfig(input_shape=DIGITS, backbone=_backbone("small"))


@DDPM_PRESETS.register("base")
def ddpm_base() -> DDPMConfig:
    return DDPMConfig(input_shape=DIGITS, backbone=_backbone("base"))


def _diffusion(ddpm: DDPMConfig, **changes: object) -> DiffusionConfig:
    """A DDPM preset as a ``diffusion`` config, with ``changes``."""
    return DiffusionConfig(**{**attrs.asdict(ddpm, recurse=False), **changes})


@DIFFUSION_PRESETS.register("tiny")
def diffusion_tiny() -> DiffusionConfig:
    return _diffusion(ddpm_tiny(), num_classes=2, guidance_scale=2.0)


@DIFFUSION_PRESETS.register("small")
def diffusion_small() -> DiffusionConfig:
    return _diffusion(ddpm_small(), sampler="ddim", sampling_steps=50)


@DIFFUSION_PRESETS.register("base")
def diffusion_base() -> DiffusionConfig:
    return _diffusion(ddpm_base(), sampler="ddim", sampling_steps=50)


@SCORE_PRESETS.register("tiny")
def score_tiny() -> ScoreDiffusionConfig:
    return ScoreDiffusionConfig(input_shape=DIGITS, backbone=_backbone("tiny"), num_noise_levels=4, langevin_steps=3,
                                sde_steps=10)


@SCORE_PRESETS.register("small")
def score_small() -> ScoreDiffusionConfig:
    return ScoreDiffusionConfig(input_shape=DIGITS, backbone=_backbone("small"))


@SCORE_PRESETS.register("base")
def score_base() -> ScoreDiffusionConfig:
    return ScoreDiffusionConfig(input_shape=DIGITS, backbone=_backbone("base"))
