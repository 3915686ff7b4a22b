"""Extensions: things built beside a model from the ``extensions`` section of a config.

An extension is contributed through :func:`~model_foundry.hookspecs.foundry_extensions` as an
:class:`~model_foundry.records.ExtensionSpec` whose ``build(model, config)`` returns an
:class:`Extension`. Training calls, for each training batch and in the order the config lists
the extensions::

    batch = extension.transform_batch(batch, generator)   # training batches only
    output = model(**batch)
    loss = output.loss + sum(extension.extra_loss(model, batch, output) ...)   # those not None
    ... backward, optimizer step ...
    extension.on_optimizer_step(model, step)

Sampling (at evaluation and in ``foundry sample``) runs inside :func:`sampling_weights`, and
checkpoints hold every extension's :meth:`Extension.state_dict` in ``extensions.safetensors``
(:func:`save_extension_states`, :func:`load_extension_states`). ``model`` is always the
unwrapped model that :func:`~model_foundry.factory.create_model` built.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping

import attrs

from model_foundry.errors import ConfigError, FoundryError, Problem
from model_foundry.fields import non_negative, option, positive, probability, unit_interval

if TYPE_CHECKING:
    import torch

    from model_foundry.registry import Registry

EXTENSIONS_FILE = "extensions.safetensors"


class Extension:
    """Base class of extensions; every method defaults to doing nothing."""

    def transform_batch(self, batch: dict[str, Any], generator: "torch.Generator | None") -> dict[str, Any]:
        """The training batch the model sees (augmented, ...); draws randomness from ``generator`` only.

        Returns a new dict; the given one is left unchanged."""
        return batch

    def extra_loss(self, model: Any, batch: Mapping[str, Any], output: Any) -> "torch.Tensor | None":
        """A term added to ``output.loss`` before the backward pass, or ``None``."""
        return None

    def on_optimizer_step(self, model: Any, step: int) -> None:
        """Called after optimizer step ``step`` (1-based, the run's global step)."""

    @contextlib.contextmanager
    def sampling(self, model: Any) -> Iterator[None]:
        """A context in which the model draws samples (e.g. with averaged weights swapped in)."""
        yield

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """Tensors that a checkpoint saves so that a resumed run continues exactly."""
        return {}

    def load_state_dict(self, state: Mapping[str, "torch.Tensor"]) -> None:
        """Restore what :meth:`state_dict` returned."""


def build_extensions(
    extensions_config: Mapping[str, Any] | None, model: Any, registry: "Registry | None" = None
) -> dict[str, Extension]:
    """Build the extensions a config's ``extensions`` section names, in its order.

    Each value is the extension's typed config (as :func:`~model_foundry.load_config` gives it),
    a plain mapping of its options, or ``None`` for its defaults.
    """
    from model_foundry.factory import typed_config
    from model_foundry.records import resolve
    from model_foundry.registry import get_registry

    registry = registry or get_registry()
    built: dict[str, Extension] = {}
    for name, options in (extensions_config or {}).items():
        spec = _extension_spec(registry, name)
        config = typed_config(options, spec.config_class, ("extensions", name))
        built[name] = resolve(spec.build)(model, config)
    return built


def default_extensions(architecture: str, registry: "Registry | None" = None) -> dict[str, Any]:
    """The typed ``extensions`` section that configs of ``architecture`` get when they have none
    (its :attr:`~model_foundry.records.ArchitectureSchema.default_extensions`; empty for an unknown one)."""
    from model_foundry.factory import typed_config
    from model_foundry.registry import Architecture, find_architecture, get_registry

    registry = registry or get_registry()
    found = find_architecture(architecture, registry)
    if not isinstance(found, Architecture):
        return {}
    defaults: dict[str, Any] = {}
    for name, options in found.schema.default_extensions.items():
        spec = _extension_spec(registry, name)
        defaults[name] = typed_config(options, spec.config_class, ("extensions", name))
    return defaults


def _extension_spec(registry: "Registry", name: str) -> Any:
    from model_foundry.registry import unique_entry

    spec = unique_entry(registry.extensions, name, "extension")
    if isinstance(spec, str):
        raise ConfigError(Problem(spec, f"extensions.{name}"))
    return spec


@contextlib.contextmanager
def sampling_weights(extensions: Mapping[str, Extension], model: Any) -> Iterator[None]:
    """A context entering every extension's :meth:`Extension.sampling` (e.g. EMA weights in)."""
    with contextlib.ExitStack() as stack:
        for extension in extensions.values():
            stack.enter_context(extension.sampling(model))
        yield


def save_extension_states(extensions: Mapping[str, Extension], directory: str | os.PathLike[str]) -> str | None:
    """Write every extension's state as ``<name>.<key>`` tensors in ``directory/extensions.safetensors``.

    ``directory`` is normally the staging directory of an atomic checkpoint write; the file itself
    is also written under a temporary name and renamed. Returns its path, or ``None`` when no
    extension has state.
    """
    from safetensors.torch import save_file

    tensors = {
        f"{name}.{key}": tensor.detach().contiguous()
        for name, extension in extensions.items()
        for key, tensor in extension.state_dict().items()
    }
    if not tensors:
        return None
    path = os.path.join(os.fspath(directory), EXTENSIONS_FILE)
    partial = path + ".partial"
    save_file(tensors, partial, metadata={"format": "pt"})
    os.replace(partial, path)
    return path


def load_extension_states(
    extensions: Mapping[str, Extension], directory: str | os.PathLike[str], device: Any = None
) -> None:
    """Restore extension states saved by :func:`save_extension_states` (no pickle).

    A checkpoint that lacks the state of an extension with state is a
    :class:`~model_foundry.errors.FoundryError`; state of extensions not built is ignored
    (a config may drop an extension).
    """
    wanted = {name: extension for name, extension in extensions.items() if extension.state_dict()}
    if not wanted:
        return
    path = os.path.join(os.fspath(directory), EXTENSIONS_FILE)
    if not os.path.isfile(path):
        raise FoundryError(
            f"{os.fspath(directory)!r} has no {EXTENSIONS_FILE}, so the state of extension(s) "
            f"{', '.join(wanted)} cannot be restored; use a checkpoint written by a run with them, "
            "or remove them from the config's 'extensions' section"
        )
    from safetensors.torch import load_file

    saved = load_file(path, device="cpu" if device is None else str(device))
    for name, extension in wanted.items():
        prefix = f"{name}."
        state = {key[len(prefix):]: tensor for key, tensor in saved.items() if key.startswith(prefix)}
        if not state:
            raise FoundryError(f"{path} holds no state for extension {name!r}; it was saved by a run without it")
        extension.load_state_dict(state)


# --- the built-in extensions ------------------------------------------------------------------


def _modality(model: Any) -> str:
    from model_foundry.factory import modality_of

    return modality_of(model.config)


def _input_key(modality: str, registry: "Registry | None" = None) -> str:
    from model_foundry.registry import get_registry, unique_entry

    spec = unique_entry((registry or get_registry()).modalities, modality, "modality")
    if isinstance(spec, str):
        raise FoundryError(spec)
    return spec.input_key


@attrs.frozen
class EMAConfig:
    """``extensions.ema``: an exponential moving average of the weights, used for sampling."""

    decay: float = option(0.9999, doc="weight of the average at each update: avg = decay * avg + (1 - decay) * weights",
                          validator=probability)
    update_after_step: int = option(0, doc="optimizer steps before averaging starts; until then the average copies "
                                           "the weights", validator=non_negative)
    update_every: int = option(1, doc="average every this many optimizer steps", validator=positive)
    warmup: bool = option(False, doc="ramp the decay up as 1 - (1 + t / inv_gamma) ** -power over the t-th update, "
                                     "capped at decay (diffusers' EMAModel warmup)")
    inv_gamma: float = option(1.0, doc="warmup: inverse multiplicative factor of the update count", validator=positive)
    power: float = option(2 / 3, doc="warmup: exponential factor (2/3 suits runs of ~1M steps, 3/4 shorter ones)",
                          validator=positive)
    min_decay: float = option(0.0, doc="warmup: the smallest decay used", validator=probability)

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.min_decay > self.decay:
            yield "min_decay", f"must be <= decay ({self.decay}), got {self.min_decay}"


def running_statistics(model: Any) -> dict[str, Any]:
    """The running means and variances of the model's normalization layers that track them (batch
    norm, instance norm with ``track_running_stats``), by their names in ``model.state_dict()``."""
    found = {}
    for prefix, module in model.named_modules():
        if getattr(module, "track_running_stats", False) and getattr(module, "running_mean", None) is not None:
            for name in ("running_mean", "running_var"):
                found[f"{prefix}.{name}" if prefix else name] = getattr(module, name)
    return found


class ExponentialMovingAverage(Extension):
    """An average of the model's floating-point parameters and of its normalization layers' running
    statistics, swapped in while the model samples.

    After optimizer step ``s``, with ``t = (s - update_after_step) / update_every`` updates so
    far, ``avg = d_t * avg + (1 - d_t) * weights``; ``d_t`` is ``decay``, or the warmup ramp.
    The running statistics are averaged alike (as timm's ``ModelEmaV2`` does): a batch-norm layer
    in eval mode normalizes with them, and the live model's statistics belong to the live weights.
    """

    def __init__(self, model: Any, config: EMAConfig):
        self.config = config
        # named_parameters() yields a tied parameter once, so the average holds it once too.
        self.averaged = {name: p for name, p in model.named_parameters() if p.is_floating_point()}
        self.statistics = running_statistics(model)
        self.averaged.update(self.statistics)
        self.shadow = {name: p.detach().clone() for name, p in self.averaged.items()}

    def decay_at(self, update: int) -> float:
        """The decay of the ``update``-th update (1-based)."""
        config = self.config
        if not config.warmup:
            return config.decay
        ramp = 1 - (1 + update / config.inv_gamma) ** -config.power
        return max(config.min_decay, min(config.decay, ramp))

    def _pairs(self) -> tuple[list["torch.Tensor"], list["torch.Tensor"]]:
        for name, tensor in self.averaged.items():
            if self.shadow[name].device != tensor.device:  # training moved the model after build
                self.shadow[name] = self.shadow[name].to(tensor.device)
        return list(self.shadow.values()), [t.detach() for t in self.averaged.values()]

    def on_optimizer_step(self, model: Any, step: int) -> None:
        import torch

        since = step - self.config.update_after_step
        if since % self.config.update_every and since > 0:
            return
        shadow, weights = self._pairs()
        with torch.no_grad():
            if since <= 0:
                torch._foreach_copy_(shadow, weights)
            else:
                torch._foreach_lerp_(shadow, weights, 1 - self.decay_at(since // self.config.update_every))

    @contextlib.contextmanager
    def sampling(self, model: Any) -> Iterator[None]:
        import torch

        shadow, weights = self._pairs()
        saved = [w.clone() for w in weights]
        with torch.no_grad():
            torch._foreach_copy_(weights, shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(weights, saved)

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        return {f"shadow.{name}": tensor for name, tensor in self.shadow.items()}

    def load_state_dict(self, state: Mapping[str, "torch.Tensor"]) -> None:
        expected = self.state_dict()
        # Checkpoints written before the running statistics were averaged hold none: the model's
        # own (restored from the same checkpoint) stand in, as they did when that run sampled.
        optional = {f"shadow.{name}" for name in self.statistics}
        missing = sorted(set(expected) - set(state) - optional)
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
        if missing or unexpected or wrong:
            details = [f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                       for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", wrong)) if keys]
            raise FoundryError(f"the saved EMA weights do not match this model ({'; '.join(details)}); "
                               "was the checkpoint written for another model config?")
        import torch

        with torch.no_grad():
            for name, tensor in self.shadow.items():
                tensor.copy_(state.get(f"shadow.{name}", self.averaged[name]))


@attrs.frozen
class AugmentationConfig:
    """``extensions.augmentation``: random changes to training inputs, drawn from training's seeded generator."""

    horizontal_flip: float = option(0.0, doc="probability of flipping an image left-right", validator=unit_interval)
    max_shift: int = option(0, doc="shift images by a uniform whole number of pixels in [-max_shift, max_shift] "
                                   "along each axis", validator=non_negative)
    shift_padding: Literal["edge", "reflect", "constant"] = option(
        "edge", doc="what fills the pixels a shift uncovers: the edge pixels, a reflection, or the constant -1 "
                    "(black in [-1, 1]-scaled images)")
    noise_std: float = option(0.0, doc="standard deviation of Gaussian noise added to vectors", validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        if not (self.horizontal_flip or self.max_shift or self.noise_std):
            yield "", "augmentation does nothing; set horizontal_flip, max_shift or noise_std"


_PADDING_MODES = {"edge": "replicate", "reflect": "reflect", "constant": "constant"}


class Augmentation(Extension):
    """Image flips and shifts, Gaussian noise on vectors: on the input key of the model's modality only."""

    def __init__(self, model: Any, config: AugmentationConfig):
        self.config = config
        modality = _modality(model)
        for name, wants in (("horizontal_flip", "image"), ("max_shift", "image"), ("noise_std", "vector")):
            if getattr(config, name) and wants != modality:
                raise ConfigError(Problem(f"{name} augments {wants} data, and this {model.architecture} model is "
                                          f"built for {modality} data", f"extensions.augmentation.{name}"))
        self.input_key = _input_key(modality)

    def transform_batch(self, batch: dict[str, Any], generator: "torch.Generator | None") -> dict[str, Any]:
        config, inputs = self.config, batch[self.input_key]
        if config.horizontal_flip:
            inputs = self._flip(inputs, generator)
        if config.max_shift:
            inputs = self._shift(inputs, generator)
        if config.noise_std:
            import torch

            noise = torch.randn(inputs.shape, generator=generator, device=_device_of(generator), dtype=inputs.dtype)
            inputs = inputs + config.noise_std * noise.to(inputs.device)
        return {**batch, self.input_key: inputs}

    def _flip(self, images: "torch.Tensor", generator: "torch.Generator | None") -> "torch.Tensor":
        import torch

        flip = torch.rand(images.shape[0], generator=generator, device=_device_of(generator)) < self.config.horizontal_flip
        return torch.where(flip.to(images.device).view(-1, *[1] * (images.dim() - 1)), images.flip(-1), images)

    def _shift(self, images: "torch.Tensor", generator: "torch.Generator | None") -> "torch.Tensor":
        import torch
        import torch.nn.functional as F

        shift, (n, _, height, width) = self.config.max_shift, images.shape
        if self.config.shift_padding == "reflect" and shift >= min(height, width):
            raise FoundryError(f"extensions.augmentation.max_shift={shift} cannot reflect-pad {height}x{width} "
                               f"images; use a max_shift below {min(height, width)} or shift_padding: edge")
        offsets = torch.randint(-shift, shift + 1, (n, 2), generator=generator, device=_device_of(generator))
        offsets = offsets.to(images.device)
        mode = _PADDING_MODES[self.config.shift_padding]
        padded = F.pad(images, (shift,) * 4, mode=mode, **({"value": -1.0} if mode == "constant" else {}))
        # Output pixel (i, j) of an image shifted by (dy, dx) is padded pixel (shift - dy + i, shift - dx + j).
        rows = (shift - offsets[:, :1]) + torch.arange(height, device=images.device)
        cols = (shift - offsets[:, 1:]) + torch.arange(width, device=images.device)
        picked = padded[torch.arange(n, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        return picked.permute(0, 3, 1, 2).contiguous()  # advanced indices first: (N, H, W, C) -> (N, C, H, W)


def _device_of(generator: "torch.Generator | None") -> Any:
    return generator.device if generator is not None else "cpu"


@attrs.frozen
class RegularizationConfig:
    """``extensions.regularization``: penalties added to the training loss."""

    weight_penalty: float = option(0.0, doc="L2 penalty: weight_penalty * the sum of squares of every trainable "
                                            "parameter", validator=non_negative)
    gradient_penalty: float = option(0.0, doc="R1-style penalty: gradient_penalty * N * ||d loss / d inputs||^2 "
                                              "over a batch of N inputs (the mean over examples of their squared "
                                              "input-gradient norm when the loss is a batch mean)",
                                     validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        if not (self.weight_penalty or self.gradient_penalty):
            yield "", "regularization does nothing; set weight_penalty or gradient_penalty"


class Regularization(Extension):
    """An L2 weight penalty and a gradient penalty on the inputs of the model's modality."""

    def __init__(self, model: Any, config: RegularizationConfig):
        self.config = config
        self.input_key = _input_key(_modality(model))

    def transform_batch(self, batch: dict[str, Any], generator: "torch.Generator | None") -> dict[str, Any]:
        if not self.config.gradient_penalty:
            return batch
        key = self.input_key
        inputs = batch[key]
        if not inputs.is_floating_point():
            raise FoundryError(f"extensions.regularization.gradient_penalty needs continuous inputs; {key!r} holds "
                               f"{inputs.dtype} values; remove the gradient penalty for this model")
        return {**batch, key: inputs.detach().requires_grad_(True)}

    def extra_loss(self, model: Any, batch: Mapping[str, Any], output: Any) -> "torch.Tensor | None":
        import torch

        from model_foundry.protocol import unique_parameters

        terms = []
        if self.config.weight_penalty:
            squares = [p.pow(2).sum() for p in unique_parameters(model.parameters()) if p.requires_grad]
            terms.append(self.config.weight_penalty * torch.stack(squares).sum())
        if self.config.gradient_penalty:
            inputs = batch[self.input_key]
            if not inputs.requires_grad:
                raise RuntimeError("regularization.extra_loss needs the batch its transform_batch returned")
            (gradient,) = torch.autograd.grad(output.loss, inputs, create_graph=True)
            terms.append(self.config.gradient_penalty * inputs.shape[0] * gradient.pow(2).sum())
        return sum(terms[1:], terms[0])
