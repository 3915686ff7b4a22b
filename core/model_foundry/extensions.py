"""Extensions: things built beside a model from the ``extensions`` section of a config.

An extension is contributed through :func:`~model_foundry.hookspecs.foundry_extensions` as an
:class:`~model_foundry.specs.ExtensionSpec` whose ``build(model, config)`` returns an
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
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    import torch

    from model_foundry.plugins import Registry

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
    from model_foundry.config import unique_entry
    from model_foundry.errors import ConfigError, Problem
    from model_foundry.factory import typed_config
    from model_foundry.plugins import get_registry
    from model_foundry.specs import resolve

    registry = registry or get_registry()
    built: dict[str, Extension] = {}
    for name, options in (extensions_config or {}).items():
        spec = unique_entry(registry.extensions, name, "extension")
        if isinstance(spec, str):
            raise ConfigError(Problem(spec, f"extensions.{name}"))
        config = typed_config(options, spec.config_class, ("extensions", name))
        built[name] = resolve(spec.build)(model, config)
    return built


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
    from model_foundry.errors import FoundryError

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
