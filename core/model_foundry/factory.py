"""Building things from configs: models, collators, tokenizers (imports torch lazily)."""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from model_foundry.config import (
    FoundryConfig,
    ModelConfig,
    find_architecture,
    load_config,
    load_model_config,
    unique_entry,
)
from model_foundry.errors import ConfigError, FoundryError, Problem
from model_foundry.plugins import Registry, get_registry
from model_foundry.schema import Located, Path, Structurer, unstructure
from model_foundry.specs import resolve
from model_foundry.text.config import TokenizerConfig


def typed_config(value: Any, cls: type, path: Path) -> Any:
    """``value`` — an instance of the attrs class ``cls``, a plain mapping of its fields, or ``None``
    for its defaults — as a checked instance: field validators and ``validate()`` run, and every
    problem is raised at once as a :class:`ConfigError` located at ``path``."""
    data = unstructure(value) if isinstance(value, cls) else ({} if value is None else value)
    structurer = Structurer(Located(data))
    instance = structurer.structure(data, cls, path)
    if structurer.problems:
        raise ConfigError(structurer.problems)
    return instance


def model_config_of(config: Any, registry: Registry | None = None) -> ModelConfig:
    """The model section of a loaded config, a model section, a YAML path or a plain mapping."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config, sections=("model", "tokenizer"), registry=registry)
    if isinstance(config, Mapping):
        config = load_model_config(config.get("model", config), registry)
    if isinstance(config, FoundryConfig):
        if config.model is None:
            raise ConfigError(Problem("the config has no 'model' section", location=None))
        model = config.model
        vocab = getattr(model.params, "vocab_size", "absent")
        if vocab is None and config.tokenizer is not None:
            model = model.evolve(vocab_size=config.tokenizer.vocab_size)
        return model
    if isinstance(config, ModelConfig):
        return config
    raise TypeError(f"expected a config, a model section, a YAML path or a mapping, got {type(config).__name__}")


def create_model(config: Any, *, device: Any = None, registry: Registry | None = None) -> Any:
    """Build the model a config describes, through its architecture's plugin.

    ``config`` may be a :class:`FoundryConfig`, its :class:`ModelConfig`, a YAML path or a
    mapping. ``device="meta"`` builds without allocating weights (for size summaries).
    """
    registry = registry or get_registry()
    model_config = model_config_of(config, registry)
    found = find_architecture(model_config.architecture, registry)
    if isinstance(found, str):
        raise ConfigError(Problem(found, "model.architecture"))
    if found.builder is None:
        raise FoundryError(
            f"{found.plugin.distribution} {found.plugin.version} declares architecture {found.name!r} "
            "but no model builder for it (a bug in that plugin)"
        )
    from model_foundry.protocol import check_capabilities

    build = resolve(found.builder.build)
    if device is None:
        model = build(model_config)
    else:
        import torch

        with torch.device(device):
            model = build(model_config)
    check_capabilities(model, found.schema.capabilities, found.plugin.distribution)
    return model


def _unique(table: Mapping[str, list[Any]], name: str, what: str) -> Any:
    found = unique_entry(table, name, what)
    if isinstance(found, str):
        raise ConfigError(Problem(found))
    return found


def create_collator(name: str, tokenizer: Any, registry: Registry | None = None, **options: Any) -> Any:
    """A collator by name (``causal_lm``, ``masked_lm``, ...), from whichever plugin provides it."""
    spec = _unique((registry or get_registry()).collators, name, "collator")
    return resolve(spec.factory)(tokenizer, **options)


def train_tokenizer(
    tokenizer_config: TokenizerConfig | Mapping[str, Any], files: Iterable[str | os.PathLike[str]],
    registry: Registry | None = None,
) -> Any:
    """Train a tokenizer of ``tokenizer_config.tokenizer_type`` on text files."""
    if isinstance(tokenizer_config, Mapping):
        tokenizer_config = TokenizerConfig(**tokenizer_config)
    spec = _unique((registry or get_registry()).tokenizers, tokenizer_config.tokenizer_type, "tokenizer type")
    files = [os.fspath(f) for f in files]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FoundryError(f"tokenizer training file(s) not found: {', '.join(missing)}")
    return resolve(spec.train)(tokenizer_config, files)


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """Load a tokenizer saved with ``save_pretrained`` (or inside a checkpoint directory)."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise FoundryError(f"no tokenizer in {path!r} (expected {os.path.join(path, 'tokenizer.json')})")
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(path)
