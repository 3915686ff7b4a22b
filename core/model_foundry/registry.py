"""The registry: what the installed plugins contribute, looked up by name.

:class:`Registry` holds every contribution indexed by name, each with the :class:`PluginInfo` of
the distribution that made it; :func:`get_registry` is the process-wide one, built on first use
by :mod:`model_foundry.discovery`. :func:`find_architecture` and :func:`unique_entry` look names
up with messages that say why nothing was found; :func:`list_architectures`, :func:`list_plugins`
and the functions after them are the read-only views that ``foundry list`` and ``foundry plugins``
print.
"""

from __future__ import annotations

import fnmatch
import sys
from typing import Any, Mapping

import attrs

from model_foundry.errors import did_you_mean, one_of
from model_foundry.records import (
    ArchitectureSchema,
    CheckpointConverter,
    CollatorSpec,
    DatasetSpec,
    Exporter,
    ExtensionSpec,
    MetricSpec,
    ModalitySpec,
    ModelBuilder,
    TokenizerSpec,
    TrainingStep,
)


@attrs.frozen
class PluginInfo:
    """One plugin module and the distribution that ships it."""

    name: str
    distribution: str
    version: str
    module: str
    import_seconds: float | None = attrs.field(default=None, eq=False)  # None: not imported through discovery
    heavy_imports: tuple[str, ...] = attrs.field(default=(), eq=False)  # heavy modules its import pulled in


@attrs.frozen
class PluginError:
    """A plugin that could not be imported, or a hook of it that raised."""

    plugin: str
    distribution: str
    version: str
    stage: str  # "import" or the hook's name
    error: str
    traceback: str = attrs.field(repr=False, default="")

    def __str__(self) -> str:
        return f"{self.distribution} {self.version} ({self.plugin}): {self.stage} failed: {self.error}"


@attrs.frozen
class Architecture:
    """An installed architecture: its schema, its builder, and where it comes from."""

    schema: ArchitectureSchema
    plugin: PluginInfo
    builder: ModelBuilder | None = None

    @property
    def name(self) -> str:
        return self.schema.name

    def as_record(self) -> dict[str, Any]:
        caps = self.schema.capabilities
        return {
            "name": self.schema.name,
            "distribution": self.plugin.distribution,
            "version": self.plugin.version,
            "family": self.schema.family,
            "description": self.schema.description,
            "presets": list(self.schema.presets),
            "objectives": list(caps.objectives),
            "supports_generation": caps.supports_generation,
            "modality": caps.modality,
            "modalities": list(caps.supported_modalities),
            # Every capability field of the record, so that one added there is listed without a change here.
            "capabilities": {
                key: value for key, value in attrs.asdict(caps).items() if key not in ("objectives", "modality", "modalities")
            },
            "buildable": self.builder is not None,
        }


@attrs.define
class Registry:
    """Everything the installed (and allowed) plugins contribute."""

    plugins: list[PluginInfo] = attrs.field(factory=list)
    errors: list[PluginError] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    blocked: list[PluginInfo] = attrs.field(factory=list)
    architectures: dict[str, list[Architecture]] = attrs.field(factory=dict)
    collators: dict[str, list[tuple[CollatorSpec, PluginInfo]]] = attrs.field(factory=dict)
    tokenizers: dict[str, list[tuple[TokenizerSpec, PluginInfo]]] = attrs.field(factory=dict)
    converters: list[tuple[CheckpointConverter, PluginInfo]] = attrs.field(factory=list)
    exporters: list[tuple[Exporter, PluginInfo]] = attrs.field(factory=list)
    training_steps: dict[str, list[tuple[TrainingStep, PluginInfo]]] = attrs.field(factory=dict)
    modalities: dict[str, list[tuple[ModalitySpec, PluginInfo]]] = attrs.field(factory=dict)
    datasets: dict[str, list[tuple[DatasetSpec, PluginInfo]]] = attrs.field(factory=dict)
    metrics: dict[str, list[tuple[MetricSpec, PluginInfo]]] = attrs.field(factory=dict)
    extensions: dict[str, list[tuple[ExtensionSpec, PluginInfo]]] = attrs.field(factory=dict)

    def conflicts(self) -> dict[str, list[str]]:
        """Names contributed by more than one distribution, with those distributions."""
        found: dict[str, list[str]] = {}
        for kind, table in (
            ("architecture", self.architectures),
            ("collator", self.collators),
            ("tokenizer", self.tokenizers),
            ("modality", self.modalities),
            ("dataset", self.datasets),
            ("metric", self.metrics),
            ("extension", self.extensions),
        ):
            for name, entries in table.items():
                dists = [_plugin_of(entry).distribution for entry in entries]
                if len(set(dists)) > 1:
                    found[f"{kind} {name}"] = dists
        return found

    def preferring(self, architecture: str, distribution: str | None) -> Registry:
        """This registry with ``architecture`` provided by ``distribution`` alone, where several
        distributions provide it and ``distribution`` is one of them (a checkpoint records the one
        it was saved with); otherwise this very registry."""
        entries = self.architectures.get(architecture, [])
        chosen = [entry for entry in entries if entry.plugin.distribution == distribution]
        if not chosen or len(chosen) == len(entries):
            return self
        steps = [entry for entry in self.training_steps.get(architecture, []) if entry[1].distribution == distribution]
        return attrs.evolve(self, architectures={**self.architectures, architecture: chosen},
                            training_steps={**self.training_steps, architecture: steps})

    def contributions(self, plugin: PluginInfo) -> dict[str, list[str]]:
        """What one plugin contributes, by kind (for ``foundry plugins``)."""
        def names(table: dict[str, list[Any]]) -> list[str]:
            return sorted(n for n, entries in table.items() if any(_plugin_of(e) == plugin for e in entries))

        return {
            "architectures": names(self.architectures),
            "collators": names(self.collators),
            "tokenizers": names(self.tokenizers),
            "checkpoint_converters": sorted(c.name for c, p in self.converters if p == plugin),
            "exporters": sorted(f"{e.architecture}->{e.format}" for e, p in self.exporters if p == plugin),
            "training_steps": names(self.training_steps),
            "modalities": names(self.modalities),
            "datasets": names(self.datasets),
            "metrics": names(self.metrics),
            "extensions": names(self.extensions),
        }

    def merge(self, other: Registry) -> None:
        """Add everything ``other`` holds to this registry (a plugin registered at run time)."""
        for field in attrs.fields(Registry):
            target, source = getattr(self, field.name), getattr(other, field.name)
            if isinstance(target, dict):
                for name, entries in source.items():
                    target.setdefault(name, []).extend(entries)
            else:
                target.extend(source)

    def remove(self, plugin: PluginInfo) -> None:
        """Remove ``plugin`` and everything it contributed."""
        for field in attrs.fields(Registry):
            value = getattr(self, field.name)
            for key, entries in list(value.items()) if isinstance(value, dict) else [(None, value)]:
                entries[:] = [entry for entry in entries if _owner(entry) != plugin]
                if key is not None and not entries:
                    del value[key]


def _plugin_of(entry: Any) -> PluginInfo:
    return entry.plugin if isinstance(entry, Architecture) else entry[1]


def _owner(entry: Any) -> PluginInfo | None:
    if isinstance(entry, PluginInfo):
        return entry
    return _plugin_of(entry) if isinstance(entry, (Architecture, tuple)) else None


# --- lookups ---------------------------------------------------------------------------------


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


# --- the process-wide registry -----------------------------------------------------------------

_current: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _current
    if _current is None:
        from model_foundry.discovery import build_registry  # discovery builds registries: it imports this module

        _current = build_registry()
    return _current


def set_registry(registry: Registry | None) -> Registry | None:
    """Install ``registry`` as the process-wide one (``None`` rebuilds on next use); returns the old one."""
    global _current
    previous, _current = _current, registry
    return previous


# --- read-only views -------------------------------------------------------------------------


def list_architectures(pattern: str | None = None) -> list[dict[str, Any]]:
    """Installed architectures, sorted by name, optionally filtered by an fnmatch ``pattern``.

    Each record has ``name``, ``distribution``, ``version``, ``family``, ``description``,
    ``presets``, ``objectives``, ``supports_generation``, ``modality`` (native), ``modalities``
    (every one it can be built for), ``capabilities`` (each capability field of its
    :class:`~model_foundry.records.Capabilities`: ``sampling``, ``likelihood`` (``"exact"``,
    ``"bound"`` or None), ``latent``, ...), ``buildable`` and ``conflict`` (true when several
    distributions claim the name; they are all listed).
    """
    registry = get_registry()
    records = []
    for name in sorted(registry.architectures):
        if pattern and not fnmatch.fnmatchcase(name, pattern):
            continue
        entries = registry.architectures[name]
        for entry in entries:
            record = entry.as_record()
            record["conflict"] = len({e.plugin.distribution for e in entries}) > 1
            records.append(record)
    return records


def plugin_errors() -> list[dict[str, str]]:
    """Plugins that failed to import or whose hooks raised: distribution, version, stage, error."""
    return [
        {
            "plugin": e.plugin,
            "distribution": e.distribution,
            "version": e.version,
            "stage": e.stage,
            "error": e.error,
        }
        for e in get_registry().errors
    ]


def plugin_warnings() -> list[str]:
    """What loading the plugins found worth saying without failing any: slow imports, imports of torch,
    allow-list entries that match no installed distribution."""
    return list(get_registry().warnings)


def list_plugins() -> list[dict[str, Any]]:
    """Every plugin found: loaded ones with what they contribute, blocked ones, failed ones.

    Each row also has ``import_seconds`` (how long importing its entry point took; null when it was
    not imported through discovery) and ``heavy_imports`` (modules such as torch that the import
    pulled in, which every command then pays for)."""
    registry = get_registry()
    failed = {(e.distribution, e.plugin) for e in registry.errors}
    rows = []
    for info in registry.plugins:
        rows.append(
            {
                "plugin": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "status": "error" if (info.distribution, info.name) in failed else "loaded",
                "contributes": registry.contributions(info),
                "import_seconds": info.import_seconds,
                "heavy_imports": list(info.heavy_imports),
            }
        )
    for info in registry.blocked:
        rows.append(
            {"plugin": info.name, "distribution": info.distribution, "version": info.version,
             "module": info.module, "status": "blocked", "contributes": {}, "import_seconds": None, "heavy_imports": []}
        )
    for error in registry.errors:
        if not any(r["distribution"] == error.distribution and r["plugin"] == error.plugin for r in rows):
            rows.append(
                {"plugin": error.plugin, "distribution": error.distribution, "version": error.version,
                 "module": "", "status": "error", "contributes": {}, "import_seconds": None, "heavy_imports": []}
            )
    for row in rows:
        row["errors"] = [
            f"{e.stage}: {e.error}" for e in registry.errors
            if e.distribution == row["distribution"] and e.plugin == row["plugin"]
        ]
    return sorted(rows, key=lambda r: (r["distribution"], r["plugin"]))


def report_plugin_problems() -> None:
    """Print under a command's output what is wrong with the installed plugins: how many failed to load
    (``foundry plugins`` has the details) and the registry's warnings (conflicting names, ...)."""
    failures = plugin_errors()
    if failures:
        names = ", ".join(sorted({failure["distribution"] for failure in failures}))
        print(f"warning: {len(failures)} plugin(s) failed to load ({names}); see `foundry plugins`", file=sys.stderr)
    for warning in plugin_warnings():
        print(f"warning: {warning}", file=sys.stderr)

