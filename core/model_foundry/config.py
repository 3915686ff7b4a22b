"""Reading config files: YAML with locations, presets, ``--set`` overrides, typed sections.

A config file has up to five sections — ``model``, ``tokenizer``, ``data``, ``training``,
``extensions``. ``model`` is typed by its ``architecture``, ``data`` by its ``kind`` (default
``text``), each block of ``extensions`` by its name, all through the registry.
:func:`load_config` reads it and returns a :class:`FoundryConfig`, or raises
:class:`~model_foundry.errors.ConfigError` listing every problem as
``FILE:LINE:COL: dotted.key: message``.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import attrs
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from model_foundry.errors import ConfigError, Location, Problem, did_you_mean, one_of
from model_foundry.plugins import Architecture, Registry, get_registry
from model_foundry.schema import (
    Located,
    Path,
    Structurer,
    apply_global_defaults,
    check_mapping_keys,
    class_schema,
    dotted,
    global_defaults,
    json_schema,
    unstructure,
)
from model_foundry.sections import TrainingConfig
from model_foundry.text.config import TokenizerConfig

SECTIONS = ("model", "tokenizer", "data", "training", "extensions")
MODEL_KEYS = ("architecture", "preset")
DEFAULT_DATA_KIND = "text"
# Top-level keys of a data manager's combined model + dataset file (the Performer guide's): say what to do instead.
FOREIGN_SECTIONS = {
    "datasets": "a data manager's dataset list is not read by Model Foundry; describe text data in a 'data' "
    "section (train_files, validation_files), or check only the model with --model-only",
    "global_config": "a data manager's global_config is not read by Model Foundry (defaults shared by encoder "
    "and decoder go in model.global_config); check only the model with --model-only",
}


@attrs.frozen
class ModelConfig:
    """The ``model`` section: an architecture name and that architecture's typed fields.

    The fields of ``params`` (the architecture's attrs config) read as attributes of this
    object too: ``config.model.transformer.layers``.
    """

    architecture: str
    params: Any
    preset: str | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.params, name)

    def evolve(self, **changes: Any) -> "ModelConfig":
        """A copy with some of the architecture's fields changed (validators run again)."""
        return attrs.evolve(self, params=attrs.evolve(self.params, **changes))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/JSON: the resolved fields, no preset (they are already applied)."""
        return {"architecture": self.architecture, **unstructure(self.params)}


@attrs.frozen
class DataSection:
    """The ``data`` section: a dataset ``kind`` and that kind's typed fields.

    The fields of ``params`` (the kind's attrs config) read as attributes of this object too:
    ``config.data.block_size``.
    """

    kind: str
    params: Any

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.params, name)

    def evolve(self, **changes: Any) -> "DataSection":
        """A copy with some of the kind's fields changed (validators run again)."""
        return attrs.evolve(self, params=attrs.evolve(self.params, **changes))

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


# --- reading YAML ---------------------------------------------------------------------------


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


# Bounds that keep a small hostile file from exhausting the machine (docs/configs.md, "Limits").
MAX_NESTING = 100  # ruamel's scanner is superlinear in flow nesting and its composer recursive
MAX_VALUES = 100_000  # keys, values and list items after aliases are expanded ("billion laughs")
MAX_INT_DIGITS = 4300  # Python's own limit for converting a decimal string to int
PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")}
_DECIMAL = re.compile(r"[-+]?[0-9][0-9_]*")


def read_yaml(path: str | os.PathLike[str]) -> Located:
    """Parse a YAML file into plain data with the location of every key and value."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(Problem(f"config file not found: {path!r}; check the path"))
    if os.path.isdir(path):
        raise ConfigError(Problem(f"{path!r} is a directory; expected a YAML config file"))
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        line = text_line_of(path, exc.start)
        raise ConfigError(Problem(f"not UTF-8 text ({exc.reason}); save the file as UTF-8",
                                  location=Location(path, line, 1))) from None
    except OSError as exc:
        raise ConfigError(Problem(f"cannot read {path!r}: {exc.strerror or exc}")) from None
    return parse_yaml(text, path)


def text_line_of(path: str, offset: int) -> int:
    with open(path, "rb") as handle:
        return handle.read(offset).count(b"\n") + 1


def _load(text: str, filename: str) -> Any:
    """The YAML document in ``text``, once it is known to stay within the limits above."""
    _check_flow_nesting(text, filename)
    _check_events(_yaml().parse(text), filename)
    return _yaml().load(text)


def _check_flow_nesting(text: str, filename: str) -> None:
    """Refuse deep ``[``/``{`` nesting before the scanner sees it (counted on the raw text, so a
    bracket inside a quoted string counts too: only a file far beyond any real config is refused)."""
    depth = 0
    for match in re.finditer(r"[\[\]{}]", text):
        depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
        if depth > MAX_NESTING:
            line = text.count("\n", 0, match.start()) + 1
            column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
            raise ConfigError(Problem(f"more than {MAX_NESTING} nested [ or {{; a config nests a few levels deep",
                                      location=Location(filename, line, column)))


def _check_events(events: Iterable[Any], filename: str) -> None:
    """One pass over the parser's events: no tag that names a type (``!!python/...``), no nesting beyond
    :data:`MAX_NESTING`, no integer beyond :data:`MAX_INT_DIGITS` digits, and at most
    :data:`MAX_VALUES` values once every alias is expanded."""

    def refuse(event: Any, message: str) -> None:
        mark = event.start_mark
        raise ConfigError(Problem(message, location=Location(filename, mark.line + 1, mark.column + 1)))

    sizes: dict[str, int] = {}  # anchor -> values in the anchored node, its own aliases expanded
    open_nodes: list[tuple[str | None, int]] = [(None, 0)]  # (anchor, values so far) of each open collection

    def add(event: Any, count: int) -> None:
        anchor, total = open_nodes[-1]
        total += count
        if total > MAX_VALUES:
            refuse(event, f"this file expands to more than {MAX_VALUES:,} values once its aliases (*name) are "
                   "expanded; a config needs far fewer: write the values out, or use fewer nested aliases")
        open_nodes[-1] = (anchor, total)

    for event in events:
        kind = type(event).__name__
        tag = getattr(event, "tag", None)
        if tag is not None and str(tag) not in PLAIN_TAGS:
            hint = " (nothing in a config is ever executed)" if "python/" in str(tag) else ""
            refuse(event, f"YAML tag {str(tag).replace('tag:yaml.org,2002:', '!!')!r} is not allowed{hint}; "
                   "write the plain value without a tag")
        if kind in ("SequenceStartEvent", "MappingStartEvent"):
            if len(open_nodes) > MAX_NESTING:
                refuse(event, f"more than {MAX_NESTING} nested levels; a config nests a few levels deep")
            open_nodes.append((event.anchor, 1))
        elif kind in ("SequenceEndEvent", "MappingEndEvent"):
            anchor, total = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = total
            add(event, total)
        elif kind == "ScalarEvent":
            value = event.value
            if event.style is None and tag is None and len(value) > MAX_INT_DIGITS and _DECIMAL.fullmatch(value):
                refuse(event, f"an integer of {len(value):,} digits; integers in a config have at most "
                       f"{MAX_INT_DIGITS} digits")
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(event, 1)
        elif kind == "AliasEvent":
            add(event, sizes.get(event.anchor, 1))


def parse_yaml(text: str, filename: str = "<string>") -> Located:
    try:
        root = _load(text, filename)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = _yaml_message(exc, text, mark)
        location = Location(filename, mark.line + 1, mark.column + 1) if mark else Location(filename)
        raise ConfigError(Problem(message, location=location)) from None
    except YAMLError as exc:
        raise ConfigError(Problem(f"invalid YAML: {exc}", location=Location(filename))) from None
    if root is None:
        raise ConfigError(
            Problem(f"the file is empty; expected a mapping with sections {', '.join(SECTIONS)}", location=Location(filename))
        )
    if not isinstance(root, CommentedMap):
        raise ConfigError(
            Problem(
                f"the top level must be a mapping of sections ({', '.join(SECTIONS)}), got {type(root).__name__}",
                location=Location(filename, 1, 1),
            )
        )
    located = Located(None)
    located.values[()] = Location(filename, 1, 1)
    located.data = _plain(root, (), located, filename)
    return located


def _yaml_message(exc: MarkedYAMLError, text: str, mark: Any) -> str:
    problem = (exc.problem or str(exc)).strip()
    if "found duplicate key" in problem or "duplicate key" in str(exc):
        key = problem.split('"')[1] if '"' in problem else ""
        return f"duplicate key {key!r}; each key may appear once in a mapping".replace(" ''", "")
    if mark is not None and "\t" in (text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""):
        return "tab character in indentation; YAML indents with spaces only"
    context = f" {exc.context}" if exc.context else ""
    return f"invalid YAML: {problem}{context}"


def _plain(node: Any, path: Path, located: Located, filename: str) -> Any:
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            try:
                line, col = node.lc.key(key)
                vline, vcol = node.lc.value(key)
            except (KeyError, TypeError):  # a key merged in with `<<:` is located at its mapping
                line, col = vline, vcol = node.lc.line, node.lc.col
            if value is None:  # ruamel places a missing value at the next token; point at the key
                vline, vcol = line, col
            key = str(key) if not isinstance(key, str) else key
            located.keys[path + (key,)] = Location(filename, line + 1, col + 1)
            located.values[path + (key,)] = Location(filename, vline + 1, vcol + 1)
            out[key] = _plain(value, path + (key,), located, filename)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            located.values[path + (index,)] = Location(filename, line + 1, col + 1)
            out_list.append(_plain(value, path + (index,), located, filename))
        return out_list
    if hasattr(node, "__float__") and type(node).__module__.startswith("ruamel"):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    return node


# --- overrides and presets ------------------------------------------------------------------


def parse_override(text: str) -> tuple[Path, Any, Location]:
    """``"model.transformer.layers=4"`` -> path, value parsed as a YAML scalar, its location."""
    where = Location(f"--set {text}", 1, 1)
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(Problem("expected --set dotted.key=value, e.g. --set training.max_steps=100", location=where))
    try:
        value = _load(raw, where.file) if raw.strip() else ""
    except YAMLError:
        value = raw
    if isinstance(value, (CommentedMap, CommentedSeq)):
        value = _plain(value, (), Located(None), where.file)
    elif hasattr(value, "__float__") and type(value).__module__.startswith("ruamel"):
        value = float(value)
    return tuple(key.split(".")), value, Location(where.file, 1, len(key) + 2)


def apply_overrides(source: Located, overrides: Iterable[str]) -> list[Problem]:
    problems = []
    for text in overrides:
        try:
            path, value, where = parse_override(text)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        target = source.data
        for depth, part in enumerate(path[:-1]):
            if not isinstance(target.get(part), dict):
                if part in target:
                    problems.append(Problem(f"cannot set a key inside {dotted(path[:depth + 1])}, which is not a mapping", dotted(path), where))
                    break
                target[part] = {}
                source.keys[path[: depth + 1]] = source.values[path[: depth + 1]] = where
            target = target[part]
        else:
            target[path[-1]] = value
            source.keys[path] = source.values[path] = where
            for stale in [p for p in source.values if p[: len(path)] == path and len(p) > len(path)]:
                source.values.pop(stale, None)
                source.keys.pop(stale, None)
    return problems


def merge_preset(source: Located, path: Path, preset: Mapping[str, Any], label: str) -> None:
    """Lay a preset under the section at ``path``: the file's own keys win."""
    section = source.data
    for part in path:
        section = section[part]

    def lay(base: Mapping[str, Any], own: dict[str, Any], at: Path) -> None:
        for key, value in base.items():
            if key not in own:
                own[key] = copy.deepcopy(value)
                source.keys[at + (key,)] = source.values[at + (key,)] = Location(label)
            elif isinstance(value, Mapping) and isinstance(own[key], dict):
                lay(value, own[key], at + (key,))

    lay(preset, section, path)


# --- sections -------------------------------------------------------------------------------


def find_architecture(name: Any, registry: Registry) -> Architecture | str:
    """The installed architecture called ``name``, or a message saying why there is none."""
    if not isinstance(name, str):
        return f"expected an architecture name, got {name!r}; installed: {one_of(registry.architectures)}"
    entries = registry.architectures.get(name)
    if not entries:
        installed = sorted(registry.architectures)
        hint = did_you_mean(str(name), installed)
        failed = sorted({error.distribution for error in registry.errors})
        if failed:  # the one that provides it may be among them
            hint += f"; plugins that failed to load: {', '.join(failed)} (see `foundry plugins`)"
        return f"unknown architecture {name!r}{hint}; installed: {one_of(installed)} (pip install the plugin that provides it)"
    if len({e.plugin.distribution for e in entries}) > 1:
        dists = [e.plugin.distribution for e in entries]
        return (
            f"architecture {name!r} is provided by several distributions: {', '.join(dists)}; "
            f"choose one by blocking the others, e.g. FOUNDRY_PLUGINS_BLOCK={dists[1]}, or uninstall one"
        )
    return entries[0]


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
        merge_preset(source, path, schema.presets[preset], f"preset {preset!r} of {schema.name}")
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


def unique_entry(table: Mapping[str, list[tuple[Any, Any]]], name: Any, what: str) -> Any:
    """The spec registered as ``name`` in a registry table (collators, datasets, ...), or a message
    saying why there is none: unknown (with a did-you-mean), or provided by several distributions."""
    entries = table.get(name) if isinstance(name, str) else None
    if not entries:
        hint = did_you_mean(str(name), table) if isinstance(name, str) else ""
        return f"unknown {what} {name!r}{hint}; available: {one_of(table)}"
    dists = sorted({info.distribution for _, info in entries})
    if len(dists) > 1:
        return f"{what} {name!r} is provided by {', '.join(dists)}; block one with FOUNDRY_PLUGINS_BLOCK"
    return entries[0][0]


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


def objectives_of(model: ModelConfig, registry: Registry) -> tuple[str, ...]:
    """The objectives a model config can train (the config may narrow its schema's list)."""
    narrowed = getattr(model.params, "objectives", None)
    if callable(narrowed):
        return tuple(narrowed())
    found = find_architecture(model.architecture, registry)
    return found.schema.capabilities.objectives if isinstance(found, Architecture) else ()


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
    _check_choices(structurer, values, registry)
    if structurer.problems:
        raise ConfigError(structurer.problems)
    return FoundryConfig(**values, path=source.values[()].file if () in source.values else None)


def _check_choices(structurer: Structurer, values: Mapping[str, Any], registry: Registry) -> None:
    """Checks that need the registry or span sections: modalities, tokenizer kinds, objectives."""
    tokenizer, training, model = values.get("tokenizer"), values.get("training"), values.get("model")
    _check_modality(structurer, values, registry)
    if tokenizer is not None and tokenizer.path is None and tokenizer.tokenizer_type not in registry.tokenizers:
        hint = did_you_mean(tokenizer.tokenizer_type, registry.tokenizers)
        structurer.problem(
            ("tokenizer", "tokenizer_type"),
            f"unknown tokenizer type {tokenizer.tokenizer_type!r}{hint}; available: {one_of(registry.tokenizers)}",
        )
    if training is not None and training.objective is not None and training.objective not in registry.collators:
        hint = did_you_mean(training.objective, registry.collators)
        structurer.problem(
            ("training", "objective"), f"unknown objective {training.objective!r}{hint}; available: {one_of(registry.collators)}"
        )
    elif training is not None and training.objective is not None and model is not None:
        allowed = objectives_of(model, registry)
        if allowed and training.objective not in allowed:
            found = find_architecture(model.architecture, registry)
            general = found.schema.capabilities.objectives if isinstance(found, Architecture) else ()
            arch, objective, supported = model.architecture, training.objective, ", ".join(allowed)
            message = (
                f"{arch} cannot train {objective!r} with these settings, only {supported}; "
                f"other {arch} settings can (see `foundry info {arch}`)"
                if objective in general
                else f"{arch} cannot train {objective!r}; it supports: {supported}"
            )
            structurer.problem(("training", "objective"), message)


def data_modality(data: DataSection, registry: Registry) -> str:
    """The modality of a ``data`` section: its own ``modality`` field for kinds that hold several
    (``npy``), else its dataset kind's."""
    if "modality" in attrs.fields_dict(type(data.params)):
        return data.params.modality
    spec = unique_entry(registry.datasets, data.kind, "dataset kind")
    return DEFAULT_DATA_KIND if isinstance(spec, str) else spec.modality


def _check_modality(structurer: Structurer, values: Mapping[str, Any], registry: Registry) -> None:
    """A tokenizer belongs to text; the data's modality must be one the architecture models."""
    data, model = values.get("data"), values.get("model")
    modality = data_modality(data, registry) if data is not None else None
    if values.get("tokenizer") is not None and modality not in (None, "text"):
        structurer.problem(
            ("tokenizer",), f"a tokenizer belongs to text, and data.kind {data.kind!r} is {modality} data; "
            "remove the 'tokenizer' section", key=True,
        )
    if model is None or modality is None:
        return
    found = find_architecture(model.architecture, registry)
    supported = found.schema.capabilities.supported_modalities if isinstance(found, Architecture) else (modality,)
    if modality not in supported:
        kinds = sorted(name for name, entries in registry.datasets.items() if entries[0][0].modality in supported)
        structurer.problem(
            ("data", "kind"), f"{model.architecture} models {', '.join(supported)} data, and data.kind {data.kind!r} "
            f"is {modality}; use a dataset kind of its modality ({one_of(kinds)})",
        )


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


def architecture_schema(name: str, registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of an architecture's ``model`` section."""
    registry = registry or get_registry()
    found = find_architecture(name, registry)
    if isinstance(found, str):
        raise ConfigError(Problem(found))
    schema = found.schema
    body = class_schema(schema.config_class, require=not schema.presets)
    body["properties"] = {
        "architecture": {"const": schema.name, "description": "the architecture to build"},
        "preset": {"enum": list(schema.presets), "description": "a complete config that the fields here override"},
        **body["properties"],
    }
    body.setdefault("required", [])
    body["required"] = ["architecture", *body["required"]]
    spec = global_defaults(schema.config_class)
    if spec:
        block, targets = spec
        merged: dict[str, Any] = {}
        for target in targets:
            merged.update(json_schema_of_target(body, target))
        body["properties"][block] = {
            "type": "object",
            "properties": merged,
            "additionalProperties": False,
            "description": f"defaults for {', '.join(targets)} (their own keys win)",
        }
    body["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    body["title"] = f"{schema.name} model section"
    return body


def json_schema_of_target(body: Mapping[str, Any], target: str) -> dict[str, Any]:
    prop = body["properties"].get(target, {})
    for candidate in [prop, *prop.get("anyOf", [])]:
        if candidate.get("type") == "object":
            return {k: v for k, v in candidate.get("properties", {}).items()}
    return {}


def config_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema of a whole config file, with the model section as any installed architecture."""
    registry = registry or get_registry()
    models = [architecture_schema(name, registry) for name in sorted(registry.architectures)]
    for model in models:
        model.pop("$schema", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "model": {"oneOf": models},
            "tokenizer": json_schema(TokenizerConfig),
            "data": {"oneOf": [_data_schema(name, registry) for name in sorted(registry.datasets)]},
            "training": json_schema(TrainingConfig),
            "extensions": {
                "type": "object",
                "additionalProperties": False,
                "properties": {name: json_schema(entries[0][0].config_class) for name, entries in sorted(registry.extensions.items())},
            },
        },
    }


def _data_schema(kind: str, registry: Registry) -> dict[str, Any]:
    spec = registry.datasets[kind][0][0]
    body = class_schema(spec.config_class)
    body["properties"] = {"kind": {"const": kind, "description": spec.description}, **body["properties"]}
    if kind != DEFAULT_DATA_KIND:
        body["required"] = ["kind", *body.get("required", [])]
    return body
