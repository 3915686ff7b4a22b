"""The sections of a config file, typed: :class:`FoundryConfig` and what :func:`structure` fills it with.

``model`` is typed by its ``architecture`` (the architecture's attrs config, under its preset),
``data`` by its ``kind`` (default ``text``), each block of ``extensions`` by its name, all through
the registry; ``tokenizer`` and ``training`` have the core's own classes.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import attrs

from model_foundry.config.checks import DEFAULT_DATA_KIND, check_choices
from model_foundry.config.overrides import merge_preset
from model_foundry.config.structuring import Structurer, apply_global_defaults, check_mapping_keys
from model_foundry.config.training import TrainingConfig
from model_foundry.config.yaml import SECTIONS, Located, Path, key_path
from model_foundry.errors import ConfigError, Location, did_you_mean, one_of
from model_foundry.fields import unstructure
from model_foundry.presets import preset_fields
from model_foundry.registry import Registry, find_architecture, get_registry, unique_entry
from model_foundry.text.config import TokenizerConfig

MODEL_KEYS = ("architecture", "preset")
# Top-level keys of a data manager's combined model + dataset file (the Performer guide's): say what to do instead.
FOREIGN_SECTIONS = {
    "datasets": "a data manager's dataset list is not read by Model Foundry; describe text data in a 'data' "
    "section (train_files, validation_files), or check only the model with --model-only",
    "global_config": "a data manager's global_config is not read by Model Foundry (defaults shared by encoder "
    "and decoder go in model.global_config); check only the model with --model-only",
}


class _TypedFields:
    """A section whose ``params`` (an attrs config) holds its typed fields: they read as attributes
    of the section itself, and :meth:`evolve` changes them."""

    __slots__ = ()
    params: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.params, name)

    def evolve(self, **changes: Any) -> Any:
        """A copy with some of the fields of ``params`` changed (validators run again)."""
        return attrs.evolve(self, params=attrs.evolve(self.params, **changes))


@attrs.frozen
class ModelConfig(_TypedFields):
    """The ``model`` section: an architecture name and that architecture's typed fields.

    The fields of ``params`` (the architecture's attrs config) read as attributes of this
    object too: ``config.model.transformer.layers``.
    """

    architecture: str
    params: Any
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/JSON: the resolved fields, no preset (they are already applied)."""
        return {"architecture": self.architecture, **unstructure(self.params)}


@attrs.frozen
class DataSection(_TypedFields):
    """The ``data`` section: a dataset ``kind`` and that kind's typed fields.

    The fields of ``params`` (the kind's attrs config) read as attributes of this object too:
    ``config.data.block_size``.
    """

    kind: str
    params: Any

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **unstructure(self.params)}


@attrs.frozen
class FoundryConfig:
    """A whole config file: each section is ``None`` when the file did not have it.

    ``extensions`` maps an extension's name to its typed config, in the file's order.
    """

    model: ModelConfig | None = None
    tokenizer: TokenizerConfig | None = None
    data: DataSection | None = None
    training: TrainingConfig | None = None
    extensions: Mapping[str, Any] | None = None
    path: str | None = None
    # The file's data as read, with --set overrides and presets laid in: where each key was given.
    source: Located | None = attrs.field(default=None, eq=False, repr=False)

    def locate(self, key: str) -> Location | None:
        """Where ``key`` (``"data.train_files[0]"``) was given: its line in the file, the ``--set``
        that set it or the preset that filled it; for a key left to its default, its nearest parent
        that was given. For checks made after loading, which report problems by key alone."""
        if self.source is None:
            return Location(self.path) if self.path else None
        return self.source.where(key_path(key))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.model is not None:
            out["model"] = self.model.to_dict()
        if self.tokenizer is not None:
            out["tokenizer"] = unstructure(self.tokenizer)
        if self.data is not None:
            out["data"] = self.data.to_dict()
        if self.training is not None:
            out["training"] = unstructure(self.training)
        if self.extensions is not None:
            out["extensions"] = {name: unstructure(block) for name, block in self.extensions.items()}
        return out


# --- structuring the sections -----------------------------------------------------------------


def structure(source: Located, sections: Sequence[str] = SECTIONS, registry: Registry | None = None) -> FoundryConfig:
    """Turn located data into a :class:`FoundryConfig`, raising one ConfigError for all problems."""
    registry = registry or get_registry()
    structurer = Structurer(source)
    data = source.data
    headless_model = "model" in sections and "model" not in data and "architecture" in data
    if headless_model:
        # A model section without its heading: one problem that says so, not one per model key.
        structurer.problem(
            ("architecture",), "a model key at the top level: the model's keys (architecture, preset, its fields) "
            "go in a 'model' section; indent them under a line 'model:'", key=True,
        )
        data = {k: v for k, v in data.items() if k in SECTIONS or k in FOREIGN_SECTIONS}
    if sections == SECTIONS:
        check_mapping_keys(structurer, {k: v for k, v in data.items() if k not in FOREIGN_SECTIONS}, set(SECTIONS), (), "section")
        for key in [k for k in data if k in FOREIGN_SECTIONS]:
            structurer.problem((key,), f"unknown section {key!r}: {FOREIGN_SECTIONS[key]}", key=True)
    values: dict[str, Any] = {}
    if "model" in sections and "model" in data:
        values["model"] = _structure_model(source, structurer, registry)
    for name, cls in (("tokenizer", TokenizerConfig), ("training", TrainingConfig)):
        if name in sections and name in data:
            section = structurer.structure(data[name], cls, (name,))
            values[name] = None if section is attrs.NOTHING else section
    if "data" in sections and "data" in data:
        values["data"] = _structure_data(source, structurer, registry)
    if "extensions" in sections and "extensions" in data:
        values["extensions"] = _structure_extensions(source, structurer, registry)
    elif "extensions" in sections and isinstance(values.get("model"), ModelConfig):
        from model_foundry.extensions import default_extensions

        values["extensions"] = default_extensions(values["model"].architecture, registry) or None
    if "model" in sections and "model" not in data and not headless_model and sections != SECTIONS:
        structurer.problem((), "no 'model' section in this file")
    if "data" in sections and "data" not in data and sections != SECTIONS:
        found = ", ".join(map(str, source.data)) or "nothing"
        structurer.problem((), f"no 'data' section in this file (found: {found})")
    check_choices(structurer, values, registry)
    if structurer.problems:
        raise ConfigError(structurer.problems)
    return FoundryConfig(**values, path=source.values[()].file if () in source.values else None, source=source)


def _structure_model(source: Located, structurer: Structurer, registry: Registry, path: Path = ("model",)) -> ModelConfig | None:
    data = source.data
    for part in path:
        data = data[part]
    if not isinstance(data, dict):
        structurer.problem(path, "expected a mapping with 'architecture' and the architecture's fields")
        return None
    if "architecture" not in data:
        structurer.problem(path, f"missing required key 'architecture'; installed: {one_of(registry.architectures)}")
        return None
    found = find_architecture(data["architecture"], registry)
    if isinstance(found, str):
        structurer.problem(path + ("architecture",), found)
        return None
    schema = found.schema
    preset = data.get("preset")
    if preset is not None:
        if not isinstance(preset, str):
            structurer.problem(path + ("preset",), f"expected a preset name, got {preset!r}; presets: {one_of(schema.presets)}")
            return None
        if preset not in schema.presets:
            hint = did_you_mean(str(preset), schema.presets)
            structurer.problem(path + ("preset",), f"unknown preset {preset!r} for {schema.name}{hint}; presets: {one_of(schema.presets)}")
            return None
        merge_preset(source, path, preset_fields(schema, preset), f"preset {preset!r} of {schema.name}")
    fields = {k: v for k, v in data.items() if k not in MODEL_KEYS}
    # Structure a copy rooted at the same path so that locations still apply.
    view = Located(_with(source.data, path, fields), source.values, source.keys)
    sub = Structurer(view)
    apply_global_defaults(schema.config_class, view, path, sub)
    params = sub.structure(_at(view.data, path), schema.config_class, path)
    structurer.problems.extend(sub.problems)
    if params is attrs.NOTHING:
        return None
    return ModelConfig(architecture=schema.name, params=params, preset=preset)


def _structure_data(source: Located, structurer: Structurer, registry: Registry) -> DataSection | None:
    data = source.data["data"]
    if not isinstance(data, dict):
        structurer.problem(("data",), f"expected a mapping with 'kind' and the dataset's fields; kinds: {one_of(registry.datasets)}")
        return None
    kind = data.get("kind", DEFAULT_DATA_KIND)
    found = unique_entry(registry.datasets, kind, "dataset kind")
    if isinstance(found, str):
        structurer.problem(("data", "kind"), found)
        return None
    fields = {k: v for k, v in data.items() if k != "kind"}
    params = structurer.structure(fields, found.config_class, ("data",))
    return None if params is attrs.NOTHING else DataSection(kind=found.name, params=params)


def _structure_extensions(source: Located, structurer: Structurer, registry: Registry) -> dict[str, Any] | None:
    blocks = source.data["extensions"]
    if blocks is None:
        return {}
    if not isinstance(blocks, dict):
        structurer.problem(("extensions",), f"expected a mapping of extension names to their options; available: {one_of(registry.extensions)}")
        return None
    out: dict[str, Any] = {}
    for name, options in blocks.items():
        found = unique_entry(registry.extensions, name, "extension")
        if isinstance(found, str):
            structurer.problem(("extensions", name), found, key=True)
            continue
        value = structurer.structure({} if options is None else options, found.config_class, ("extensions", name))
        if value is not attrs.NOTHING:
            out[name] = value
    return out


def _at(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _with(data: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """A shallow copy of ``data`` with ``value`` placed at ``path``."""
    if not path:
        return value
    out = dict(data)
    out[path[0]] = _with(data[path[0]], path[1:], value) if len(path) > 1 else value
    return out
