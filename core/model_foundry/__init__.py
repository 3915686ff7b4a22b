"""Model Foundry: build, train, save and load PyTorch models from typed YAML configs.

Importing this package is cheap: it never imports torch, transformers or any plugin's
model code. Those load on first use (building a model, training a tokenizer, ...).
"""

from __future__ import annotations

from typing import Any

from model_foundry.errors import ConfigError, FoundryError, Location, Problem
from model_foundry.registry import list_architectures, list_plugins, plugin_errors

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FoundryError",
    "Location",
    "Problem",
    "list_architectures",
    "list_plugins",
    "plugin_errors",
    "load_config",
    "create_model",
    "create_model_with_extensions",
    "register_plugin",
    "unregister_plugin",
    "create_collator",
    "train_tokenizer",
    "load_tokenizer",
    "save",
    "load",
    "__version__",
]

# Public functions that live in heavier modules, imported on first access.
_LAZY = {
    "load_config": "model_foundry.config",
    "create_model": "model_foundry.factory",
    "create_model_with_extensions": "model_foundry.factory",
    "register_plugin": "model_foundry.discovery",
    "unregister_plugin": "model_foundry.discovery",
    "create_collator": "model_foundry.factory",
    "train_tokenizer": "model_foundry.factory",
    "load_tokenizer": "model_foundry.factory",
    "save": "model_foundry.checkpoint",
    "load": "model_foundry.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'model_foundry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
