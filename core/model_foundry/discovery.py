"""Finding plugins and asking them what they contribute: how a :class:`~model_foundry.registry.Registry` is built.

Plugins are modules registered under the ``model_foundry`` entry-point group. Loading
follows four rules (see docs/plugins.md):

* lazy: only the entry-point modules are imported; they import attrs config classes,
  never torch or model code;
* isolated: a plugin that fails to import (even with ``sys.exit()`` or ``KeyboardInterrupt``),
  whose hook raises or answers with something other than a list of the hook's records, is
  recorded in :attr:`Registry.errors` and skipped (``FOUNDRY_STRICT_PLUGINS=1`` re-raises);
  a slow import, or one that pulls in torch, is recorded in :attr:`Registry.warnings`;
* no silent conflicts: an architecture name claimed by two distributions is kept as a
  conflict, reported by ``foundry list`` and refused by ``create_model``;
* controllable: ``FOUNDRY_PLUGINS_ALLOW`` / ``FOUNDRY_PLUGINS_BLOCK`` (comma-separated
  distribution names) decide which distributions are imported at all; an allowed name that
  matches no installed distribution is a warning.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback
import typing
from importlib import metadata
from typing import Any, Iterable

import attrs
import pluggy
from packaging.utils import canonicalize_name

from model_foundry import hookspecs
from model_foundry.errors import FoundryError, did_you_mean
from model_foundry.records import ModelBuilder
from model_foundry.registry import Architecture, PluginError, PluginInfo, Registry, get_registry

GROUP = hookspecs.PROJECT
CORE_DISTRIBUTION = "model-foundry"
ALLOW_ENV = "FOUNDRY_PLUGINS_ALLOW"
BLOCK_ENV = "FOUNDRY_PLUGINS_BLOCK"
STRICT_ENV = "FOUNDRY_STRICT_PLUGINS"
TRACE_ENV = "FOUNDRY_TRACE_PLUGINS"
# Every command imports every plugin's entry point: past this, the import is reported as slow.
SLOW_IMPORT_SECONDS = 0.5
HEAVY_MODULES = ("torch", "transformers", "tensorflow", "jax")
# What a plugin's import may raise and still be isolated: a plugin's sys.exit() or KeyboardInterrupt
# at import time must not end the command for every other plugin.
ISOLATED = (Exception, SystemExit, KeyboardInterrupt)


def _names_from_env(variable: str) -> set[str]:
    value = os.environ.get(variable, "")
    return {canonicalize_name(part.strip()) for part in value.split(",") if part.strip()}


def _flag(variable: str) -> bool:
    return os.environ.get(variable, "").lower() in {"1", "true", "yes", "on"}


def strict() -> bool:
    return _flag(STRICT_ENV)


def trace(message: str) -> None:
    """With ``FOUNDRY_TRACE_PLUGINS=1``, one line on stderr: what discovery did with an entry point, or
    one hook call of one plugin with its answer and time. (pluggy's hook-call monitoring would see none
    of these: each implementation is called on its own, see :func:`_answers`.)"""
    if _flag(TRACE_ENV):
        print(f"foundry trace: {message}", file=sys.stderr)


def make_plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _distribution_of(entry_point: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown", "?"
    return canonicalize_name(dist.metadata["Name"] or dist.name), dist.version


def discover(manager: pluggy.PluginManager, registry: Registry) -> None:
    """Import and register every allowed entry point of the ``model_foundry`` group."""
    allow, block = _names_from_env(ALLOW_ENV), _names_from_env(BLOCK_ENV)
    seen: set[tuple[str, str]] = set()
    for entry_point in metadata.entry_points(group=GROUP):
        distribution, version = _distribution_of(entry_point)
        if (distribution, entry_point.name) in seen:  # the same dist found twice on sys.path
            continue
        seen.add((distribution, entry_point.name))
        info = PluginInfo(entry_point.name, distribution, version, entry_point.value)
        who = f"entry point {entry_point.name} = {entry_point.value} ({distribution} {version})"
        is_core = distribution == CORE_DISTRIBUTION
        if distribution in block or (allow and not is_core and distribution not in allow):
            registry.blocked.append(info)
            trace(f"{who}: not imported, {'blocked by ' + BLOCK_ENV if distribution in block else 'not in ' + ALLOW_ENV}")
            continue
        incompatible = _api_problem(entry_point)
        if incompatible and not is_core:  # never imported: it would fail deep inside, or worse, not at all
            registry.errors.append(PluginError(info.name, distribution, version, "compatibility", incompatible))
            trace(f"{who}: not imported, {incompatible}")
            continue
        loaded_before = {name for name in HEAVY_MODULES if name in sys.modules}
        started = time.perf_counter()
        try:
            module = entry_point.load()
        except ISOLATED as exc:
            trace(f"{who}: import failed after {_ms(started)}: {type(exc).__name__}: {exc}")
            if strict():
                raise
            registry.errors.append(_error(info, "import", exc))
            continue
        info = attrs.evolve(
            info, import_seconds=time.perf_counter() - started,
            heavy_imports=tuple(name for name in HEAVY_MODULES if name in sys.modules and name not in loaded_before),
        )
        trace(f"{who}: imported in {_ms(started)}")
        registry.warnings.extend(_import_warnings(info))
        register(manager, registry, module, info)
    installed = sorted({distribution for distribution, _ in seen})
    for name in sorted(allow - set(installed)):
        registry.warnings.append(
            f"{ALLOW_ENV} names {name!r}, which matches no installed plugin distribution{did_you_mean(name, installed)}; "
            f"installed: {', '.join(installed)}"
        )


def _api_problem(entry_point: metadata.EntryPoint) -> str | None:
    """Why a plugin's distribution was made for another plugin API, read from its metadata alone (its
    requirement on model-foundry excludes the installed core), or None. The plugin API is versioned with
    the core: releases 0.x.* share one (docs/plugins.md, "Compatibility")."""
    from packaging.requirements import InvalidRequirement, Requirement

    from model_foundry import __version__

    for text in (entry_point.dist.requires or ()) if entry_point.dist is not None else ():
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != CORE_DISTRIBUTION:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if not requirement.specifier.contains(__version__, prereleases=True):
            return (f"made for {CORE_DISTRIBUTION}{requirement.specifier} (the plugin API of those releases), and "
                    f"{CORE_DISTRIBUTION} {__version__} is installed; not imported. Install a release of "
                    f"{entry_point.dist.metadata['Name']} made for {__version__}, or {CORE_DISTRIBUTION}{requirement.specifier}")
    return None


def _import_warnings(info: PluginInfo) -> list[str]:
    """What a plugin's entry-point import costs every command, when it costs too much."""
    who = f"{info.distribution} {info.version} ({info.name})"
    advice = "import heavy modules inside the model builder (a 'module:function' path), not in the plugin module"
    found = []
    if info.heavy_imports:
        found.append(f"{who}: importing its entry point imports {', '.join(info.heavy_imports)}; {advice}")
    if info.import_seconds is not None and info.import_seconds > SLOW_IMPORT_SECONDS:
        found.append(f"{who}: importing its entry point took {info.import_seconds:.1f} s, which every foundry command "
                     f"pays; {advice}")
    return found


def register(manager: pluggy.PluginManager, registry: Registry, plugin: object, info: PluginInfo) -> None:
    """Register one plugin object (a module or any object with hook implementations)."""
    try:
        manager.register(plugin, name=f"{info.distribution}:{info.name}")
        _refuse_unknown_hooks(manager, plugin)
    except Exception as exc:  # a hook implementation whose arguments or name match no spec
        trace(f"{info.distribution}:{info.name}: not registered: {type(exc).__name__}: {exc}")
        if strict():
            raise
        registry.errors.append(_error(info, "register", exc))
        return
    registry.plugins.append(info)


def _refuse_unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> None:
    """Unregister ``plugin`` and raise if a hook implementation of it has a name no spec has.

    pluggy registers such an implementation silently (a misspelt ``foundry_config_schema``
    would contribute nothing, and ``foundry list`` would just not show the architecture).
    """
    unknown = sorted(caller.name for caller in manager.get_hookcallers(plugin) or () if not caller.has_spec())
    if not unknown:
        return
    manager.unregister(plugin)
    hooks = sorted(name for name, caller in vars(manager.hook).items() if caller.has_spec())
    raise FoundryError("; ".join(
        f"@hookimpl {name} is no Model Foundry hook{did_you_mean(name, hooks)}" for name in unknown
    ) + f" (the hooks: {', '.join(hooks)})")


def _error(info: PluginInfo, stage: str, exc: BaseException) -> PluginError:
    return PluginError(
        plugin=info.name,
        distribution=info.distribution,
        version=info.version,
        stage=stage,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
    )


# The attribute that indexes each hook's records (None: not indexed by name). The record type itself is
# the hook specification's return annotation, ``-> list[ModelBuilder]``: see record_type().
RECORD_KEYS: dict[str, str | None] = {
    "foundry_config_schemas": "name",
    "foundry_model_builders": "architecture",
    "foundry_collators": "name",
    "foundry_tokenizers": "name",
    "foundry_checkpoint_converters": None,
    "foundry_exporters": "architecture",
    "foundry_training_steps": "architecture",
    "foundry_modalities": "name",
    "foundry_datasets": "name",
    "foundry_metrics": "name",
    "foundry_extensions": "name",
}


@functools.cache
def record_type(hook_name: str) -> type:
    """The record a hook answers a list of, read from its specification (``list[ModelBuilder]`` -> ModelBuilder)."""
    return typing.get_args(typing.get_type_hints(getattr(hookspecs, hook_name))["return"])[0]


def _answers(manager: pluggy.PluginManager, registry: Registry, hook_name: str) -> Iterable[tuple[Any, PluginInfo]]:
    """Call one hook plugin by plugin, so that one plugin raising, or answering with something other
    than the hook's records, never hides the others: its whole answer is refused and reported."""
    by_name = {f"{p.distribution}:{p.name}": p for p in registry.plugins}
    for impl in reversed(getattr(manager.hook, hook_name).get_hookimpls()):
        info = by_name[impl.plugin_name]
        started = time.perf_counter()
        try:
            items = _checked_answer(impl.function(), hook_name)
        except ISOLATED as exc:
            trace(f"{hook_name} {impl.plugin_name}: refused after {_ms(started)}: {type(exc).__name__}: {exc}")
            if strict():
                raise
            registry.errors.append(_error(info, hook_name, exc))
            continue
        trace(f"{hook_name} {impl.plugin_name}: {len(items)} record(s) in {_ms(started)}")
        for item in items:
            yield item, info


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.2f} ms"


def _checked_answer(answer: Any, hook_name: str) -> list[Any]:
    record, key = record_type(hook_name), RECORD_KEYS[hook_name]
    if answer is None:
        return []
    if not isinstance(answer, (list, tuple)):
        raise TypeError(f"returned {type(answer).__name__} {answer!r:.60}, expected a list of {record.__name__} records")
    for item in answer:
        if not isinstance(item, record):
            raise TypeError(f"returned {type(item).__name__} {item!r:.60} in its list, expected {record.__name__} records")
        if key is not None and not isinstance(getattr(item, key), str):
            raise TypeError(f"returned a {record.__name__} whose {key} is {getattr(item, key)!r:.60}, expected a string")
    return list(answer)


def collect(manager: pluggy.PluginManager, registry: Registry) -> Registry:
    """Ask every registered plugin for its contributions and index them by name."""
    builders: dict[str, ModelBuilder] = {}
    for builder, info in _answers(manager, registry, "foundry_model_builders"):
        builders[f"{info.distribution}:{builder.architecture}"] = builder
    for schema, info in _answers(manager, registry, "foundry_config_schemas"):
        builder = builders.get(f"{info.distribution}:{schema.name}")
        registry.architectures.setdefault(schema.name, []).append(Architecture(schema, info, builder))
    for spec, info in _answers(manager, registry, "foundry_collators"):
        registry.collators.setdefault(spec.name, []).append((spec, info))
    for spec, info in _answers(manager, registry, "foundry_tokenizers"):
        registry.tokenizers.setdefault(spec.name, []).append((spec, info))
    for spec, info in _answers(manager, registry, "foundry_checkpoint_converters"):
        registry.converters.append((spec, info))
    for spec, info in _answers(manager, registry, "foundry_exporters"):
        registry.exporters.append((spec, info))
    for spec, info in _answers(manager, registry, "foundry_training_steps"):
        registry.training_steps.setdefault(spec.architecture, []).append((spec, info))
    for hook, table in (
        ("foundry_modalities", registry.modalities),
        ("foundry_datasets", registry.datasets),
        ("foundry_metrics", registry.metrics),
        ("foundry_extensions", registry.extensions),
    ):
        for spec, info in _answers(manager, registry, hook):
            table.setdefault(spec.name, []).append((spec, info))
    return registry


def build_registry(plugins: Iterable[tuple[object, PluginInfo]] = (), discover_entry_points: bool = True) -> Registry:
    """Build a registry from the installed entry points and/or plugin objects given directly."""
    manager = make_plugin_manager()
    registry = Registry()
    if discover_entry_points:
        discover(manager, registry)
    for plugin, info in plugins:
        register(manager, registry, plugin, info)
    return collect(manager, registry)


def register_plugin(plugin: object, name: str | None = None) -> PluginInfo:
    """Register a plugin object (a module, a class instance) with the process registry at run
    time, e.g. in a notebook; returns the :class:`PluginInfo` it is listed under.

    The plugin counts as a distribution called ``name`` (default: the object's ``__name__`` or
    class name), so the usual rules hold: an architecture that an installed distribution also
    provides is a conflict, reported by ``foundry list`` and refused by ``create_model``. A hook
    of the plugin that raises is a :class:`~model_foundry.errors.FoundryError` here, and
    nothing of the plugin is registered.
    """
    from model_foundry.errors import FoundryError

    registry = get_registry()
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    info = PluginInfo(name, canonicalize_name(name), "runtime", getattr(plugin, "__module__", None) or name)
    if info in registry.plugins:
        raise FoundryError(f"a plugin called {name!r} is already registered; unregister_plugin({name!r}) first")
    scratch = Registry()
    manager = make_plugin_manager()
    register(manager, scratch, plugin, info)
    collect(manager, scratch)
    if scratch.errors:
        raise FoundryError("the plugin could not be registered:\n" + "\n".join(f"  {error}" for error in scratch.errors))
    registry.merge(scratch)
    return info


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with :func:`register_plugin` and everything it contributed."""
    from model_foundry.errors import FoundryError

    registry = get_registry()
    found = [info for info in registry.plugins if info.name == name and info.version == "runtime"]
    if not found:
        raise FoundryError(f"no plugin called {name!r} was registered with register_plugin")
    registry.remove(found[0])
