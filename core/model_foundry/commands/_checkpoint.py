"""Opening a saved model for the commands that run one (``sample``, ``eval``, ``generate``)."""

from __future__ import annotations

import os
from typing import Any, Mapping

import attrs


@attrs.frozen
class OpenedCheckpoint:
    """A loaded model with what its directory says about it."""

    directory: str
    model: Any
    capabilities: Any  # the architecture's Capabilities
    config: Mapping[str, Any]  # the saved config as plain data ({} for a foreign directory, e.g. --to hf)
    data_info: Mapping[str, Any] = attrs.field(factory=dict)  # foundry.json's data_info (sample rate, classes, ...)

    @property
    def writer_info(self) -> dict[str, Any]:
        """What the modality's sample writer gets: the saved data section's fields, then what the
        data itself said when it was loaded (a WAV folder's sample rate is in no config field)."""
        return {**(self.config.get("data") or {}), **self.data_info}

    @property
    def modality(self) -> str:
        return config_modality(self.model.config, self.capabilities)

    @property
    def config_file(self) -> str | None:
        """The checkpoint's config.yaml (None in a foreign directory)."""
        from model_foundry.checkpoint import CONFIG_FILE

        path = os.path.join(self.directory, CONFIG_FILE)
        return path if os.path.isfile(path) else None


def config_modality(model_config: Any, capabilities: Any) -> str:
    """The modality a model section builds for: its ``modality`` field in an architecture that models
    several (``create_model`` sets it on the model's config), else the architecture's own."""
    params = model_config.params
    own = params.modality if "modality" in attrs.fields_dict(type(params)) else None
    return own or capabilities.modality


def open_checkpoint(directory: str, device: Any = None) -> OpenedCheckpoint:
    """Load the model in ``directory`` (a checkpoint, or a directory a converter reads) onto ``device``."""
    from model_foundry.checkpoint import CONFIG_FILE, is_checkpoint, load, read_meta, read_yaml_plain, registry_for
    from model_foundry.registry import find_architecture, get_registry

    registry = get_registry()
    if is_checkpoint(directory):
        registry = registry_for(directory, registry)  # the distribution it was saved with, where several provide it
    model = load(directory, device=device, registry=registry)
    capabilities = find_architecture(model.architecture, registry).schema.capabilities
    path = os.path.join(directory, CONFIG_FILE)
    config = (read_yaml_plain(path) or {}) if os.path.isfile(path) else {}
    data_info = read_meta(directory).get("data_info") or {} if is_checkpoint(directory) else {}
    return OpenedCheckpoint(directory, model, capabilities, config, data_info if isinstance(data_info, dict) else {})
