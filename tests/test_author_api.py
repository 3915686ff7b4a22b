"""model_foundry.plugin is the one module plugin authors import from: every name it lists
resolves, the names a plugin's entry-point module needs import no torch, and the bundled plugins
import nothing of the core from anywhere else."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import model_foundry.plugin as author_api

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = sorted(
    path for path in [*ROOT.glob("plugins/*/foundry_plugin_*"), *ROOT.glob("tests/example-plugin/*/foundry_plugin_*")]
    if path.is_dir()
)


def test_every_name_resolves():
    assert [name for name in author_api.__all__ if getattr(author_api, name, None) is None] == []


def test_what_an_entry_point_module_needs_imports_no_torch():
    light = "hookimpl, ArchitectureSchema, Capabilities, ModelBuilder, option, positive, FoundryError, EncoderConfig, " \
            "TransformerConfig, transformer_presets, Presets, ModelConfig"
    code = f"import sys\nfrom model_foundry.plugin import {light}\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_bundled_plugins_import_the_core_only_through_the_author_api():
    assert PLUGIN_PACKAGES
    outside = []
    for package in PLUGIN_PACKAGES:
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [module or ""]
                for name in modules:
                    if name.startswith("model_foundry") and name != "model_foundry.plugin":
                        outside.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert outside == [], "import these through model_foundry.plugin (or add them to it):\n" + "\n".join(outside)


def test_each_plugin_stands_alone():
    """A plugin's package and tests import no other plugin and none of the repository's test helpers
    (tests/ is on the path of this repository's test run only), so they pass wherever the core and
    that plugin alone are installed."""
    helpers = {path.stem for path in (ROOT / "tests").glob("*.py")}
    found = []
    for root in sorted(path for path in ROOT.glob("plugins/*") if path.is_dir()):
        own = "foundry_plugin_" + root.name.removeprefix("foundry-plugin-").replace("-", "_")
        for path in [*root.glob("foundry_plugin_*/**/*.py"), *root.glob("tests/**/*.py")]:
            for node in ast.walk(ast.parse(path.read_text())):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                for name in names:
                    top = name.split(".")[0]
                    if (top.startswith("foundry_plugin_") and top != own) or top in helpers:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert found == [], "\n".join(found)
