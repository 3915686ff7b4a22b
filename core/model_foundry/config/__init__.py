"""Reading config files: YAML with locations, ``--set`` overrides, presets, typed sections.

A config file has up to five sections — ``model``, ``tokenizer``, ``data``, ``training``,
``extensions``. :func:`load_config` reads it and returns a :class:`FoundryConfig`, or raises
:class:`~model_foundry.errors.ConfigError` listing every problem as
``FILE:LINE:COL: dotted.key: message``. The work is done by the modules of this package, in
the order a file goes through them:

- :mod:`~model_foundry.config.yaml`: the file read into plain data with the location of every key;
- :mod:`~model_foundry.config.overrides`: ``--set`` values laid over it, a preset beneath it;
- :mod:`~model_foundry.config.structuring`: plain data into attrs instances, every problem located;
- :mod:`~model_foundry.config.sections`: the typed sections, each structured through the registry;
- :mod:`~model_foundry.config.checks`: the checks that span sections;
- :mod:`~model_foundry.config.json_schema`: JSON Schema of the same classes, for editors;
- :mod:`~model_foundry.config.training`: the core's own ``training`` section.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Mapping, Sequence

from model_foundry.config.checks import data_modality, objectives_of
from model_foundry.config.json_schema import architecture_schema, config_schema
from model_foundry.config.overrides import apply_overrides
from model_foundry.config.sections import DataSection, FoundryConfig, ModelConfig, structure
from model_foundry.config.training import OptimizerConfig, TrainingConfig
from model_foundry.config.yaml import SECTIONS, Located, parse_yaml, read_yaml
from model_foundry.errors import ConfigError, Location
from model_foundry.registry import Registry

__all__ = [
    "SECTIONS", "DataSection", "FoundryConfig", "ModelConfig", "OptimizerConfig", "TrainingConfig",
    "apply_overrides", "architecture_schema", "config_schema", "data_modality", "load_config", "load_model_config",
    "objectives_of", "parse_yaml", "read_yaml", "structure",
]


def load_config(
    path: str | os.PathLike[str],
    overrides: Iterable[str] = (),
    sections: Sequence[str] = SECTIONS,
    registry: Registry | None = None,
) -> FoundryConfig:
    """Read, override and type-check a config file.

    ``overrides`` are ``"dotted.key=value"`` strings (values read as YAML scalars).
    ``sections`` limits parsing to some sections (e.g. ``("model",)``); other top-level keys
    are then ignored. Raises :class:`ConfigError` carrying every problem found.
    """
    source = read_yaml(path)
    problems = apply_overrides(source, overrides)
    if problems:
        raise ConfigError(problems)
    return structure(source, tuple(sections), registry)


def load_model_config(data: Mapping[str, Any], registry: Registry | None = None, label: str = "<dict>") -> ModelConfig:
    """Type-check a ``model`` section given as plain data (e.g. from a checkpoint's config.yaml)."""
    source = Located({"model": copy.deepcopy(dict(data))}, {(): Location(label)})
    config = structure(source, ("model",), registry)
    assert config.model is not None
    return config.model
