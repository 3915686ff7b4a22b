"""Saving and loading models as checkpoint directories.

A checkpoint directory holds ``config.yaml`` (the resolved config), ``model.safetensors``
(the weights; never a pickle), the tokenizer files when there is a tokenizer, and
``foundry.json`` (versions, architecture, parameter count, metrics). Writes go to a
temporary sibling directory that is renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from importlib import metadata
from typing import Any, Callable, Iterator, Mapping

from model_foundry.config import FoundryConfig, find_architecture, load_model_config
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.plugins import Registry, get_registry

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "foundry.json"


@contextlib.contextmanager
def atomic_directory(directory: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary directory that replaces ``directory`` only if the block succeeds."""
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        yield staging
        _fsync_tree(staging)
        if os.path.isdir(directory):
            retired = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
            os.replace(directory, os.path.join(retired, "previous"))
            os.replace(staging, directory)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, directory)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(root: str) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                os.fsync(handle.fileno())


def write_yaml(path: str, data: Mapping[str, Any]) -> None:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[attr-defined]
    buffer = io.StringIO()
    yaml.dump(dict(data), buffer)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())


def read_yaml_plain(path: str) -> Any:
    from ruamel.yaml import YAML

    with open(path, encoding="utf-8") as handle:
        return YAML(typ="safe", pure=True).load(handle)


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def save(
    model: Any,
    directory: str | os.PathLike[str],
    tokenizer: Any = None,
    metrics: Mapping[str, Any] | None = None,
    config: FoundryConfig | None = None,
    extra: Callable[[str], None] | None = None,
) -> str:
    """Save ``model`` (and its tokenizer) as a checkpoint directory, atomically.

    ``config`` is the whole run config to record (by default, the model's own section);
    ``extra(staging_dir)`` may add files (training state) inside the same atomic write.
    Returns the directory.
    """
    registry = get_registry()
    model_config = model.config
    found = find_architecture(model_config.architecture, registry)
    plugin = found.plugin if not isinstance(found, str) else None
    full = config.to_dict() if config is not None else {}
    full["model"] = model_config.to_dict()
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": model_config.architecture,
        "distribution": plugin.distribution if plugin else None,
        "distribution_version": plugin.version if plugin else None,
        "core_version": distribution_version("model-foundry"),
        "num_parameters": int(model.num_parameters()) if hasattr(model, "num_parameters") else None,
        "metrics": dict(metrics or {}),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_directory(directory) as staging:
        write_yaml(os.path.join(staging, CONFIG_FILE), full)
        _write_weights(model, os.path.join(staging, WEIGHTS_FILE))
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if extra is not None:
            extra(staging)
        with open(os.path.join(staging, META_FILE), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)
    return os.fspath(directory)


def _write_weights(model: Any, path: str) -> None:
    """The model's state dict as safetensors, in the layout of ``safetensors.torch.save_model`` (which
    ``load`` reads back with ``load_model``): an entry that is the very tensor of an earlier one (tied
    weights) is written once and named in the metadata as an alias of it. Entries that share a
    storage otherwise -- on a GPU cuDNN packs an RNN's weights into one buffer, each a view of part
    of it -- are copied, where ``save_model`` would refuse to write them at all."""
    from collections import Counter

    import torch
    from safetensors.torch import save_file

    def storage(tensor: torch.Tensor) -> tuple[Any, ...]:
        return tensor.device, tensor.untyped_storage().data_ptr()

    tensors: dict[str, torch.Tensor] = {}
    metadata = {"format": "pt"}
    first: dict[tuple[Any, ...], str] = {}
    for name, tensor in model.state_dict().items():
        view = (*storage(tensor), tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
        if tensor.numel() and view in first:
            metadata[name] = first[view]
        else:
            first[view] = name
            tensors[name] = tensor
    sharing = Counter(storage(tensor) for tensor in tensors.values() if tensor.numel())
    written = {name: tensor.clone() if sharing[storage(tensor)] > 1 else tensor.contiguous() for name, tensor in tensors.items()}
    save_file(written, path, metadata=metadata)


def is_checkpoint(directory: str | os.PathLike[str]) -> bool:
    return os.path.isfile(os.path.join(directory, META_FILE)) and os.path.isfile(os.path.join(directory, WEIGHTS_FILE))


def load(directory: str | os.PathLike[str], device: Any = None, registry: Registry | None = None) -> Any:
    """Rebuild a saved model (in eval mode) from a checkpoint directory, through the registry.

    Directories that are not Model Foundry checkpoints are offered to the installed
    checkpoint converters (e.g. a transformers GPT-2 or BERT directory).
    """
    directory = os.fspath(directory)
    registry = registry or get_registry()
    if not os.path.isdir(directory):
        raise FoundryError(f"checkpoint directory not found: {directory!r}")
    model = _read(directory, registry) if is_checkpoint(directory) else _convert(directory, registry)
    if device is not None:
        model = model.to(device)
    return model.eval()


def _convert(directory: str, registry: Registry) -> Any:
    """A foreign directory, imported by the first installed converter that recognises it."""
    from model_foundry.specs import resolve

    for converter, _info in registry.converters:
        if resolve(converter.detect)(directory):
            return resolve(converter.convert)(directory)
    raise FoundryError(
        f"{directory!r} is not a Model Foundry checkpoint (no {META_FILE} and {WEIGHTS_FILE}), "
        "and no installed checkpoint converter recognises it"
    )


def _read(directory: str, registry: Registry) -> Any:
    """A Model Foundry checkpoint: rebuild its architecture from config.yaml, then load the weights."""
    from safetensors.torch import load_model

    from model_foundry.factory import create_model

    with open(os.path.join(directory, META_FILE), encoding="utf-8") as handle:
        meta = json.load(handle)
    config_data = read_yaml_plain(os.path.join(directory, CONFIG_FILE)) or {}
    architecture = meta.get("architecture")
    if isinstance(find_architecture(architecture, registry), str):
        dist = meta.get("distribution") or "the plugin that provides it"
        raise FoundryError(
            f"{directory!r} holds a {architecture!r} model, but no installed plugin provides {architecture!r}; "
            f"install it with: pip install {dist}"
        )
    try:
        model_config = load_model_config(config_data.get("model", {}), registry, label=os.path.join(directory, CONFIG_FILE))
    except ConfigError as exc:
        raise FoundryError(f"the checkpoint's config no longer validates with the installed plugin:\n{exc}") from None
    model = create_model(model_config, registry=registry)
    missing, unexpected = load_model(model, os.path.join(directory, WEIGHTS_FILE), strict=False)
    if missing or unexpected:
        raise FoundryError(
            f"weights in {directory!r} do not match the {architecture} model built from its config "
            f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    return model
