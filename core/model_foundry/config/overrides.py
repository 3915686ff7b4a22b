"""Values laid over a config file: ``--set`` overrides above it, a preset beneath it.

Both change the :class:`~model_foundry.config.yaml.Located` data before it is structured, and
both record where each value they set comes from (the ``--set`` text, the preset's name), so
that a problem with such a value is reported there.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

from ruamel.yaml.error import YAMLError

from model_foundry.config.yaml import Located, Path, dotted, parse_value
from model_foundry.errors import ConfigError, Location, Problem


def parse_override(text: str) -> tuple[Path, Any, Location]:
    """``"model.transformer.layers=4"`` -> path, value parsed as a YAML scalar, its location."""
    where = Location(f"--set {text}", 1, 1)
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(Problem("expected --set dotted.key=value, e.g. --set training.max_steps=100", location=where))
    try:
        value = parse_value(raw, where.file) if raw.strip() else ""
    except YAMLError:
        value = raw
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
