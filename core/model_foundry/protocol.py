"""The model protocol: what every model built by a plugin is, and what it may declare it can do.

Every model, of any modality, is a :class:`FoundryModel`:

- ``config`` — its :class:`~model_foundry.config.ModelConfig`; ``architecture`` — its name;
- ``forward(**batch)`` — takes the batch keys of its modality (``input_ids``,
  ``pixel_values``, ``input_values``, ``class_labels``, ...) and returns a
  :class:`ModelOutput` with ``loss`` and any named loss terms (``*_loss``, logged by training);
- ``parameter_groups()`` — ``None`` for one optimizer, or named groups (``generator``,
  ``discriminator``) trained by a custom step with one optimizer each;
- ``on_optimizer_step(step)`` — called by training after every optimizer step.

An architecture that models several modalities (``Capabilities.modalities``) has a
``modality`` field in its config class: ``create_model(config, modality=...)`` sets it, and
the builder reads ``model_config.modality`` to build for that data (``None``: the native
``Capabilities.modality``).

What else a model can do is declared on its architecture's
:class:`~model_foundry.records.Capabilities` and checked by the core when the model is built
(:func:`check_capabilities`); each capability is a method with a fixed signature:

=================  ==================================================================
capability         method(s)
=================  ==================================================================
``generation``     ``generate(input_ids, max_new_tokens, ...)`` (text; see
                   :class:`model_foundry.text.modeling.LanguageModel`), and the
                   property ``supports_generation``: whether this model, as
                   configured, generates (a bidirectional one does not)
``sampling``       ``sample(num_samples, *, generator=None, conditions=None)`` -> a
                   tensor of samples in the modality's layout
``likelihood``     ``log_prob(**batch)`` -> per-example log-likelihood in nats
                   (``Capabilities.likelihood`` says ``"exact"`` or ``"bound"``)
``latent``         ``encode(**batch)`` -> latents, ``decode(latents)`` -> data
``energy``         ``energy(x)`` -> per-example energy
``score``          ``score(x, ...)`` -> the gradient of the log-density in x
``conditional``    ``sample(..., conditions=class_labels)`` and ``class_labels`` in
                   the batch; ``num_classes`` says how many classes (``None``: this
                   model, as configured, is unconditional)
=================  ==================================================================
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from model_foundry.errors import FoundryError

# capability name on Capabilities -> the methods a model must define for it
CAPABILITY_METHODS: dict[str, tuple[str, ...]] = {
    "supports_generation": ("generate",),
    "sampling": ("sample",),
    "likelihood": ("log_prob",),
    "latent": ("encode", "decode"),
    "energy": ("energy",),
    "score": ("score",),
    "conditional": ("sample",),
}


class ModelOutput(dict):
    """A model's output: read fields as attributes or as keys (``out.loss``, ``out["loss"]``).

    Only fields that are set are keys; the usual ones read as ``None`` when absent.
    """

    _FIELDS = ("loss", "logits", "hidden_states", "attentions")

    def __init__(self, fields: Any = None, /, **more: Any):
        # Also built from a mapping, like dict: Accelerate's mixed precision rebuilds outputs as type(out)({...}).
        super().__init__((k, v) for k, v in {**(fields or {}), **more}.items() if v is not None)

    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        if name in self._FIELDS:
            return None
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())


class FoundryModel(nn.Module):
    """Base class of every model a plugin builds; see the module docstring for the protocol."""

    # Conditional models: class labels (``conditions`` of ``sample``) run over 0 .. num_classes - 1.
    # None: the model, as configured, conditions on nothing.
    num_classes: int | None = None

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @property
    def architecture(self) -> str:
        return self.config.architecture

    # -- training -------------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, Iterable[nn.Parameter]] | None:
        """Named parameter groups, one optimizer each (e.g. ``generator``, ``discriminator``).

        ``None`` (the default) trains every parameter with one optimizer. A model that returns
        groups is trained by its architecture's custom training step
        (:func:`~model_foundry.hookspecs.foundry_training_steps`), and ``training.optimizers``
        may set each group's optimizer options by name.
        """
        return None

    def on_optimizer_step(self, step: int) -> None:
        """Called by training after optimizer step ``step`` (1-based); the default does nothing."""

    # -- sizes ----------------------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count; tied (shared) tensors count once."""
        return sum(p.numel() for p in unique_parameters(self.parameters()) if p.requires_grad or not trainable_only)

    def memory_footprint(self) -> dict[str, int]:
        """Bytes: ``parameters``, ``buffers``, ``total``, and ``training_adamw`` (weights, grads, two moments)."""
        return memory_footprint(self)

    # -- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str], tokenizer: Any = None, metrics: Any = None) -> str:
        """Write a checkpoint directory (config.yaml, model.safetensors, foundry.json); see :func:`model_foundry.save`."""
        from model_foundry.checkpoint import save

        return save(self, directory, tokenizer=tokenizer, metrics=metrics)


def memory_footprint(model: nn.Module) -> dict[str, int]:
    """:meth:`FoundryModel.memory_footprint` for any module."""
    params = sum(p.numel() * p.element_size() for p in unique_parameters(model.parameters()))
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    trainable = sum(p.numel() * p.element_size() for p in unique_parameters(model.parameters()) if p.requires_grad)
    return {"parameters": params, "buffers": buffers, "total": params + buffers, "training_adamw": params + buffers + trainable * 3}


def unique_parameters(parameters: Iterable[nn.Parameter]) -> Iterator[nn.Parameter]:
    """Each parameter once, however often it is shared (tied weights)."""
    seen: set[int] = set()
    for parameter in parameters:
        if id(parameter) not in seen:
            seen.add(id(parameter))
            yield parameter


def declared_capabilities(capabilities: Any) -> list[str]:
    """The capability names a :class:`~model_foundry.records.Capabilities` record turns on."""
    return [name for name in CAPABILITY_METHODS if getattr(capabilities, name)]


def check_capabilities(model: Any, capabilities: Any, distribution: str = "its plugin") -> None:
    """Raise when ``model`` lacks a method its architecture's capabilities declare (a plugin bug)."""
    if not isinstance(model, FoundryModel):
        raise FoundryError(
            f"{distribution} built a {type(model).__name__} for architecture {getattr(capabilities, 'name', '?')}, "
            "which is not a model_foundry.protocol.FoundryModel (a bug in that plugin)"
        )
    missing = [
        f"{name} needs {method}()"
        for name in declared_capabilities(capabilities)
        for method in CAPABILITY_METHODS[name]
        if not callable(getattr(model, method, None))
    ]
    if missing:
        raise FoundryError(
            f"{distribution} declares capabilities its {model.architecture} model does not implement: "
            f"{'; '.join(missing)} (a bug in that plugin)"
        )


def require_capability(model: Any, capability: str, capabilities: Any, advice: str = "") -> None:
    """A user error when the model's architecture does not declare ``capability``."""
    if not getattr(capabilities, capability, False):
        what = capability.replace("supports_", "")
        raise FoundryError(f"a {model.architecture} model has no {what} capability{'; ' + advice if advice else ''}")


def batch_examples(model: Any, shape: Sequence[int], field: str = "model.input_shape", **inputs: Any) -> torch.Tensor:
    """The examples of a batch, for a model that takes them under one of several keys: the one of
    ``inputs`` that is given (``pixel_values=..., vectors=...``), in the dtype of the model's
    parameters (float32 unless the model was converted), checked against the
    ``shape`` of one example the model was built for. Either mistake is a
    :class:`~model_foundry.errors.FoundryError` that says what to do (``field``: the config field
    that sets the shape)."""
    given = [name for name, value in inputs.items() if value is not None]
    if len(given) != 1:
        keys = " or ".join(repr(name) for name in inputs)
        raise FoundryError(f"{model.architecture} needs a batch with {keys}" + (f", not {len(given)} of them" if given else ""))
    examples = inputs[given[0]]
    if tuple(examples.shape[1:]) != tuple(shape):
        raise FoundryError(
            f"{model.architecture} was built for examples of shape {list(shape)} ({field}), and the data's "
            f"examples have shape {list(examples.shape[1:])}; set {field} to {list(examples.shape[1:])}"
        )
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32) \
        if isinstance(model, nn.Module) else torch.float32
    return examples.to(dtype)
