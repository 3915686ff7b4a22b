"""Building things from configs: models, collators, tokenizers (imports torch lazily)."""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

import attrs

from model_foundry.config import FoundryConfig, ModelConfig, data_modality, load_config, load_model_config
from model_foundry.config.structuring import Structurer
from model_foundry.config.yaml import Located, Path
from model_foundry.errors import ConfigError, FoundryError, Problem, did_you_mean, one_of
from model_foundry.fields import unstructure
from model_foundry.records import resolve
from model_foundry.registry import Architecture, Registry, find_architecture, get_registry, unique_entry
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
    """The model section of a loaded config, a model section, a YAML path, a plain mapping or a
    typed config object (an instance of an installed architecture's config class)."""
    registry = registry or get_registry()
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config, sections=("model", "tokenizer"), registry=registry)
    if isinstance(config, Mapping):
        config = load_model_config(config.get("model", config), registry)
    if isinstance(config, FoundryConfig):
        if config.model is None:
            raise ConfigError(Problem("the config has no 'model' section", location=None))
        from model_foundry.text.config import has_vocabulary

        model = config.model
        if config.tokenizer is not None and has_vocabulary(model) and model.params.vocab_size is None:
            model = model.evolve(vocab_size=config.tokenizer.vocab_size)
        return model
    if isinstance(config, ModelConfig):
        return config
    return _from_config_object(config, registry)


def _from_config_object(config: Any, registry: Registry) -> ModelConfig:
    """A typed config object: its class names the architecture (presets are not applied)."""
    owners = {
        name: entries[0] for name, entries in registry.architectures.items() if entries[0].schema.config_class is type(config)
    }
    if not owners:
        installed = sorted(
            f"{entries[0].schema.config_class.__name__} ({name})" for name, entries in registry.architectures.items()
        )
        raise TypeError(
            f"create_model() got a {type(config).__module__}.{type(config).__qualname__}, which is no installed "
            f"architecture's config class; expected one of {one_of(installed)}, or a FoundryConfig, a model "
            "section, a YAML path or a mapping"
        )
    if len(owners) > 1:
        raise FoundryError(
            f"{type(config).__name__} is the config class of several architectures ({', '.join(sorted(owners))}); "
            "say which with create_model({'architecture': NAME, ...}) or a ModelConfig"
        )
    (name, found), = owners.items()
    return ModelConfig(architecture=name, params=typed_config(config, found.schema.config_class, ("model",)))


def _for_modality(model_config: ModelConfig, found: Architecture, modality: str | None, from_data: bool) -> ModelConfig:
    """The model section adapted to ``modality`` (default: the section's own, else the architecture's native one).

    An architecture that models several modalities has a ``modality`` field in its config class,
    which its builder reads; it is set here, so that a saved model rebuilds for the same modality.
    """
    capabilities = found.schema.capabilities
    supported = capabilities.supported_modalities
    has_field, own = _own_modality(model_config)
    if from_data and own is not None and modality != own:
        raise ConfigError(Problem(
            f"the model is set to {own} data, and the data section holds {modality} data; remove model.modality "
            "or change one of them", "model.modality",
        ))
    wanted = modality or own or capabilities.modality
    if wanted not in supported:
        raise FoundryError(
            f"{found.name} cannot be adapted to {wanted!r} data{did_you_mean(str(wanted), supported)}; "
            f"it models {one_of(supported)}"
        )
    if not has_field:
        if len(supported) > 1:
            raise FoundryError(
                f"{found.plugin.distribution} declares that {found.name} models {', '.join(supported)}, but its config "
                f"class {type(model_config.params).__name__} has no 'modality' field to build for one (a bug in that plugin)"
            )
        return model_config
    return model_config if own == wanted else model_config.evolve(modality=wanted)


def modality_of(model_config: ModelConfig, registry: Registry | None = None) -> str:
    """The modality a model section builds for: its ``modality`` field where the architecture has
    one (set by :func:`create_model`), else the architecture's native modality."""
    found = find_architecture(model_config.architecture, registry or get_registry())
    if isinstance(found, str):
        raise FoundryError(found)
    return _own_modality(model_config)[1] or found.schema.capabilities.modality


def _own_modality(model_config: ModelConfig) -> tuple[bool, str | None]:
    """Whether the architecture's config class has a ``modality`` field, and its value."""
    has_field = "modality" in attrs.fields_dict(type(model_config.params))
    return has_field, model_config.params.modality if has_field else None


# What a string must look like to be taken for an architecture's name when no architecture has it:
# no path separator, no suffix (so "configs/gpt2.yaml" and "gpt2.yml" stay paths).
ARCHITECTURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def names_architecture(config: Any, registry: Registry) -> bool:
    """Whether ``config`` (a create_model argument) is an architecture's name rather than a config file.

    An installed architecture's name is one unless a file of that name exists; an unknown
    name-like string is one too, so that it fails as an unknown architecture (with what is
    installed) and not as a missing file.
    """
    if not isinstance(config, str) or os.path.exists(config):
        return False
    return config in registry.architectures or ARCHITECTURE_NAME.fullmatch(config) is not None


def create_model(
    config: Any,
    *,
    modality: str | None = None,
    device: Any = None,
    registry: Registry | None = None,
    preset: str | None = None,
    **overrides: Any,
) -> Any:
    """Build the model a config describes, through its architecture's plugin.

    ``config`` may be a :class:`FoundryConfig`, its :class:`ModelConfig`, a YAML path, a mapping,
    a typed config object (an instance of an installed architecture's config class, which names
    the architecture; its validators run, presets are not applied), or an architecture name with
    an optional ``preset`` and field ``overrides`` (``create_model("gpt2", preset="tiny", layers=2)``).
    ``modality`` adapts an architecture that models several (``Capabilities.modalities``); a
    FoundryConfig with a ``data`` section builds for the data's modality. ``device="meta"`` builds
    without allocating weights (for size summaries).
    """
    registry = registry or get_registry()
    if names_architecture(config, registry):
        if isinstance(found := find_architecture(config, registry), str):
            raise ConfigError(Problem(found))
        config = {"architecture": config, **({"preset": preset} if preset is not None else {}), **overrides}
    elif preset is not None or overrides:
        raise TypeError("create_model() takes a preset and field overrides only with an architecture name")
    from_data = modality is None and isinstance(config, FoundryConfig) and config.data is not None
    if from_data:
        modality = data_modality(config.data, registry)
    model_config = model_config_of(config, registry)
    found = find_architecture(model_config.architecture, registry)
    if isinstance(found, str):
        raise ConfigError(Problem(found, "model.architecture"))
    if found.builder is None:
        raise FoundryError(
            f"{found.plugin.distribution} {found.plugin.version} declares architecture {found.name!r} "
            "but no model builder for it (a bug in that plugin)"
        )
    model_config = _for_modality(model_config, found, modality, from_data)
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


def create_model_with_extensions(
    config: Any,
    *,
    extensions_config: Mapping[str, Any] | None = None,
    modality: str | None = None,
    device: Any = None,
    registry: Registry | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A model (as :func:`create_model` builds it) and the extensions built beside it.

    The extensions are ``extensions_config`` (extension name -> typed config, plain mapping or
    ``None``) when given, else the config's ``extensions`` section, else the architecture's
    ``default_extensions``. ``config`` is anything :func:`create_model` takes; a YAML path is
    read with its ``extensions`` section.
    """
    from model_foundry.extensions import build_extensions, default_extensions

    registry = registry or get_registry()
    if isinstance(config, (str, os.PathLike)) and not names_architecture(config, registry):
        config = load_config(config, sections=("model", "tokenizer", "extensions"), registry=registry)
    if extensions_config is None and isinstance(config, FoundryConfig):
        extensions_config = config.extensions
    model = create_model(config, modality=modality, device=device, registry=registry)
    if extensions_config is None:
        extensions_config = default_extensions(model.architecture, registry)
    return model, build_extensions(extensions_config, model, registry)


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


def load_tokenizer(path: str | os.PathLike[str], model: Any = None) -> Any:
    """Load a tokenizer saved with ``save_pretrained`` (or inside a checkpoint directory).

    With ``model`` (a language model), its ids are checked to fit the model's vocabulary.
    """
    from model_foundry.checkpoint import check_links

    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise FoundryError(f"no tokenizer in {path!r} (expected {os.path.join(path, 'tokenizer.json')})")
    check_links(path)
    from transformers import PreTrainedTokenizerFast

    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 -- the Rust tokenizers library raises a bare Exception for a damaged file
        raise FoundryError(f"cannot load the tokenizer in {path!r} ({type(exc).__name__}: {exc}); its files are damaged") from None
    from model_foundry.text.modeling import LanguageModel

    vocab_size = model.config.vocab_size if isinstance(model, LanguageModel) else None
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise FoundryError(
            f"the tokenizer in {path!r} has {len(tokenizer)} tokens, more than the model's vocab_size {vocab_size}: "
            "its ids would fall outside the model's embeddings; the tokenizer does not belong to this model"
        )
    return tokenizer
