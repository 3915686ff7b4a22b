"""Test helpers for plugin authors (also exposed to pytest through the ``model_foundry`` pytest plugin).

* :func:`isolated_registry` — a registry with entry-point discovery blocked and plugin
  objects registered directly, installed process-wide for the duration of a ``with``;
* :func:`check_architecture` — the conformance checks every architecture should pass
  (see :mod:`model_foundry.testing.conformance`);
* :func:`foundry_validate` and :func:`check_config_error` — a config file through
  ``foundry validate`` as a user runs it, and the located message it must refuse it with.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from typing import Iterator, Mapping, Sequence

from model_foundry.discovery import build_registry
from model_foundry.registry import PluginInfo, Registry, set_registry


def plugin_info(name: str = "test-plugin", distribution: str = "test-plugin", version: str = "0.0.0") -> PluginInfo:
    return PluginInfo(name=name, distribution=distribution, version=version, module="<registered directly>")


@contextlib.contextmanager
def isolated_registry(*plugins: object | tuple[object, PluginInfo], builtins: bool = True) -> Iterator[Registry]:
    """Install a registry made only of ``plugins`` (plus the core's built-ins) while the block runs.

    Each plugin is an object with hook implementations (a module or an instance), or a
    ``(plugin, PluginInfo)`` pair to set the distribution name it is reported under.
    """
    entries = []
    if builtins:
        from model_foundry import builtins as core_builtins

        entries.append((core_builtins, plugin_info("builtins", "model-foundry", "0.1.0")))
    for index, plugin in enumerate(plugins):
        if isinstance(plugin, tuple):
            entries.append(plugin)
        else:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            entries.append((plugin, plugin_info(f"{name}-{index}", f"test-plugin-{index}")))
    registry = build_registry(entries, discover_entry_points=False)
    previous = set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(previous)


def write_distribution(
    directory: str | os.PathLike[str],
    name: str,
    version: str = "0.1.0",
    modules: Mapping[str, str] | None = None,
    entry_points: Mapping[str, str] | None = None,
    requires: Sequence[str] = (),
) -> str:
    """Write a throwaway installed distribution into ``directory`` (a ``*.dist-info`` and its modules).

    ``modules`` maps module names to source; ``entry_points`` maps entry-point names to
    ``"module"`` values in the ``model_foundry`` group; ``requires`` are its ``Requires-Dist`` lines
    (e.g. ``"model-foundry>=0.1,<0.2"``). Put ``directory`` on ``sys.path`` (or
    ``PYTHONPATH`` of a subprocess) and ``importlib.metadata`` finds it like a pip-installed
    distribution. Returns ``directory``.
    """
    directory = os.fspath(directory)
    for module, source in (modules or {}).items():
        with open(os.path.join(directory, f"{module}.py"), "w", encoding="utf-8") as handle:
            handle.write(textwrap.dedent(source))
    info = os.path.join(directory, f"{name.replace('-', '_')}-{version}.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as handle:
        handle.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        handle.write("".join(f"Requires-Dist: {requirement}\n" for requirement in requires))
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as handle:
        handle.write("[model_foundry]\n" + "".join(f"{k} = {v}\n" for k, v in (entry_points or {}).items()))
    return directory


def foundry_validate(path: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """``foundry validate PATH`` in a fresh process, as a user runs it (``returncode``, ``stdout``, ``stderr``)."""
    return subprocess.run([sys.executable, "-m", "model_foundry.cli", "validate", os.fspath(path)],
                          capture_output=True, text=True, timeout=120)


def check_config_error(text: str, where: str, message: str, directory: str | os.PathLike[str]) -> None:
    """``foundry validate`` refuses the config ``text`` as a user error: exit code 2, no
    traceback, and ``message`` reported at ``FILE`` + ``where`` (``":LINE:COL: key.path:"``)."""
    path = os.path.join(directory, "config.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    result = foundry_validate(path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"{path}{where}" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def __getattr__(name: str):
    if name in {"check_architecture", "conformance_checks"}:
        from model_foundry.testing import conformance

        return getattr(conformance, name)
    raise AttributeError(name)
