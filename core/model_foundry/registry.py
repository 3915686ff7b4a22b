"""Read-only views of what is installed: architectures, plugins, failures."""

from __future__ import annotations

import fnmatch
from typing import Any

from model_foundry.plugins import get_registry


def list_architectures(pattern: str | None = None) -> list[dict[str, Any]]:
    """Installed architectures, sorted by name, optionally filtered by an fnmatch ``pattern``.

    Each record has ``name``, ``distribution``, ``version``, ``family``, ``description``,
    ``presets``, ``objectives``, ``supports_generation``, ``modality`` (native), ``modalities``
    (every one it can be built for), ``capabilities`` (each capability field of its
    :class:`~model_foundry.specs.Capabilities`: ``sampling``, ``likelihood`` (``"exact"``,
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
    import sys

    failures = plugin_errors()
    if failures:
        names = ", ".join(sorted({failure["distribution"] for failure in failures}))
        print(f"warning: {len(failures)} plugin(s) failed to load ({names}); see `foundry plugins`", file=sys.stderr)
    for warning in plugin_warnings():
        print(f"warning: {warning}", file=sys.stderr)

