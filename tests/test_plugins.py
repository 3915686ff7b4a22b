"""Plugin discovery through real entry points: isolation, conflicts, blocking, laziness."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys

import pytest

import model_foundry
from model_foundry import ConfigError
from model_foundry.registry import set_registry
from model_foundry.testing import write_distribution

GOOD_PLUGIN = """
    import attrs
    from model_foundry.plugin import hookimpl
    from model_foundry.fields import option
    from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder

    @attrs.frozen
    class Config:
        width: int = option(8)

    @hookimpl
    def foundry_config_schemas():
        return [ArchitectureSchema("{arch}", Config, family="third-party", description="from {dist}",
                                   presets={{"tiny": lambda: Config(width=4)}}, capabilities=Capabilities(("causal_lm",)))]

    @hookimpl
    def foundry_model_builders():
        return [ModelBuilder("{arch}", "{module}:build")]

    def build(config):
        raise RuntimeError("not built in these tests")
"""


def good(directory, dist, arch, module):
    source = GOOD_PLUGIN.format(arch=arch, dist=dist, module=module)
    return write_distribution(directory, dist, "1.2.3", {module: source}, {arch: module})


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path for throwaway distributions; the registry is rebuilt from it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    previous = set_registry(None)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("tp_")]:
        del sys.modules[name]
    set_registry(previous)


def test_third_party_plugin_is_discovered(site):
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    [record] = model_foundry.list_architectures("widg*")
    assert record["name"] == "widget"
    assert record["distribution"] == "foundry-plugin-widget" and record["version"] == "1.2.3"
    assert record["family"] == "third-party" and record["presets"] == ["tiny"]
    assert record["objectives"] == ["causal_lm"] and record["conflict"] is False


def test_broken_plugin_is_isolated(site):
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    write_distribution(site, "foundry-plugin-broken", "0.0.1", {"tp_broken": "raise ImportError('no such thing')\n"},
                       {"broken": "tp_broken"})
    write_distribution(site, "foundry-plugin-raising", "0.0.2", {"tp_raising": """
        from model_foundry.plugin import hookimpl
        @hookimpl
        def foundry_config_schemas():
            raise ValueError("hook exploded")
    """}, {"raising": "tp_raising"})
    names = [a["name"] for a in model_foundry.list_architectures()]
    assert "widget" in names
    errors = {e["distribution"]: e for e in model_foundry.plugin_errors()}
    assert errors["foundry-plugin-broken"]["version"] == "0.0.1"
    assert "no such thing" in errors["foundry-plugin-broken"]["error"]
    assert errors["foundry-plugin-raising"]["stage"] == "foundry_config_schemas"
    assert "hook exploded" in errors["foundry-plugin-raising"]["error"]
    rows = {r["distribution"]: r for r in model_foundry.list_plugins()}
    assert rows["foundry-plugin-broken"]["status"] == "error"
    assert rows["foundry-plugin-widget"]["contributes"]["architectures"] == ["widget"]


def test_a_misspelt_hook_implementation_is_reported_not_silently_ignored(site):
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    misspelt = GOOD_PLUGIN.format(arch="typo", dist="foundry-plugin-typo", module="tp_typo")
    misspelt = misspelt.replace("def foundry_config_schemas", "def foundry_config_schema")
    write_distribution(site, "foundry-plugin-typo", "0.3.0", {"tp_typo": misspelt}, {"typo": "tp_typo"})
    names = [a["name"] for a in model_foundry.list_architectures()]
    assert "widget" in names and "typo" not in names
    error = {e["distribution"]: e for e in model_foundry.plugin_errors()}["foundry-plugin-typo"]
    assert error["stage"] == "register" and error["version"] == "0.3.0"
    assert "@hookimpl foundry_config_schema is no Model Foundry hook; did you mean 'foundry_config_schemas'?" in error["error"]
    # nothing of it stays registered: its correctly spelt builder hook does not answer either
    assert {r["distribution"]: r["status"] for r in model_foundry.list_plugins()}["foundry-plugin-typo"] == "error"


def test_a_plugin_made_for_another_plugin_api_is_reported_and_not_imported(site):
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    write_distribution(site, "foundry-plugin-future", "2.0.0", {"tp_future": "raise RuntimeError('imported')\n"},
                       {"future": "tp_future"}, requires=["model-foundry>=0.9,<0.10", "numpy"])
    write_distribution(site, "foundry-plugin-extra", "1.0.0", {"tp_extra": "raise RuntimeError('imported extra')\n"},
                       {"extra": "tp_extra"}, requires=['model-foundry>=9; extra == "docs"'])
    errors = {e["distribution"]: e for e in model_foundry.plugin_errors()}
    future = errors["foundry-plugin-future"]
    assert future["stage"] == "compatibility" and future["version"] == "2.0.0"
    assert "made for model-foundry<0.10,>=0.9" in future["error"] and "not imported" in future["error"]
    # A requirement only an extra asks for does not count: that plugin is imported (and fails there).
    assert errors["foundry-plugin-extra"]["stage"] == "import"
    assert "widget" in [a["name"] for a in model_foundry.list_architectures()]


def test_strict_mode_reraises(site, monkeypatch):
    write_distribution(site, "foundry-plugin-broken", "0.0.1", {"tp_broken": "raise ImportError('no such thing')\n"},
                       {"broken": "tp_broken"})
    monkeypatch.setenv("FOUNDRY_STRICT_PLUGINS", "1")
    with pytest.raises(ImportError, match="no such thing"):
        model_foundry.list_architectures()


def test_conflict_is_listed_and_building_names_both(site, tmp_path):
    good(site, "foundry-plugin-one", "clash", "tp_one")
    good(site, "foundry-plugin-two", "clash", "tp_two")
    records = model_foundry.list_architectures("clash")
    assert {r["distribution"] for r in records} == {"foundry-plugin-one", "foundry-plugin-two"}
    assert all(r["conflict"] for r in records)
    with pytest.raises(ConfigError) as info:
        model_foundry.create_model({"architecture": "clash"})
    message = str(info.value)
    assert "foundry-plugin-one" in message and "foundry-plugin-two" in message and "FOUNDRY_PLUGINS_BLOCK" in message


def test_blocked_plugin_is_never_imported(site, monkeypatch):
    write_distribution(site, "foundry-plugin-bomb", "0.1", {"tp_bomb": "raise SystemExit('imported!')\n"}, {"bomb": "tp_bomb"})
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    monkeypatch.setenv("FOUNDRY_PLUGINS_BLOCK", "Foundry_Plugin.Bomb")
    assert "widget" in [a["name"] for a in model_foundry.list_architectures()]
    assert "tp_bomb" not in sys.modules
    assert {r["distribution"]: r["status"] for r in model_foundry.list_plugins()}["foundry-plugin-bomb"] == "blocked"


def test_allow_list_keeps_only_named_distributions(site, monkeypatch):
    write_distribution(site, "foundry-plugin-bomb", "0.1", {"tp_bomb": "raise SystemExit('imported!')\n"}, {"bomb": "tp_bomb"})
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    monkeypatch.setenv("FOUNDRY_PLUGINS_ALLOW", "foundry-plugin-widget")
    assert [a["name"] for a in model_foundry.list_architectures()] == ["widget"]
    assert "tp_bomb" not in sys.modules
    # The core's own built-ins are always there.
    assert any(r["distribution"] == "model-foundry" and r["status"] == "loaded" for r in model_foundry.list_plugins())


def test_listing_imports_no_torch_in_a_fresh_process(tmp_path):
    code = (
        "import sys, json, model_foundry\n"
        "records = model_foundry.list_architectures()\n"
        "from model_foundry.cli import main\n"
        "main(['list'])\n"
        "main(['plugins'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers', 'accelerate') if m in sys.modules)\n"
        "print(json.dumps(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_foundry_plugins_reports_a_broken_third_party_plugin(tmp_path):
    write_distribution(tmp_path, "foundry-plugin-broken", "0.0.1", {"tp_broken2": "import not_a_module\n"},
                       {"broken": "tp_broken2"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "model_foundry.cli", "plugins", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["distribution"]: r for r in json.loads(result.stdout)}
    assert rows["foundry-plugin-broken"]["status"] == "error"
    assert "not_a_module" in rows["foundry-plugin-broken"]["errors"][0]
    listing = subprocess.run([sys.executable, "-m", "model_foundry.cli", "list"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert listing.returncode == 0 and "failed to load (foundry-plugin-broken)" in listing.stderr
    # Where it matters, the failed plugin is named: info, validate, and a name no plugin provides.
    info = subprocess.run([sys.executable, "-m", "model_foundry.cli", "info", "gpt2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert info.returncode == 0 and "failed to load (foundry-plugin-broken)" in info.stderr
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  architecture: gpt2\n  preset: tiny\n")
    valid = subprocess.run([sys.executable, "-m", "model_foundry.cli", "validate", str(config)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert valid.returncode == 0 and "failed to load (foundry-plugin-broken)" in valid.stderr
    config.write_text("model:\n  architecture: broken_thing\n")
    unknown = subprocess.run([sys.executable, "-m", "model_foundry.cli", "validate", str(config)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert unknown.returncode == 2
    assert "unknown architecture 'broken_thing'" in unknown.stderr
    assert "plugins that failed to load: foundry-plugin-broken" in unknown.stderr


def test_registry_fixture_registers_plugins_directly(foundry_registry):
    from toy_plugin import ToyPlugin

    registry = foundry_registry(ToyPlugin())
    assert set(registry.architectures) == {"toy", "twopart"}
    assert "causal_lm" in registry.collators and "bpe" in registry.tokenizers


WRONG_ANSWERS = {
    "a-string-list": "return ['not a schema']",
    "a-single-record": "return ArchitectureSchema('lonely', Config)",
    "a-string": "return 'widget'",
    "a-bad-name": "return [ArchitectureSchema(['not', 'a', 'name'], Config)]",
}


@pytest.mark.parametrize("body", WRONG_ANSWERS.values(), ids=WRONG_ANSWERS.keys())
def test_a_hook_answering_the_wrong_type_is_reported_against_its_plugin(site, tmp_path, capsys, body):
    from model_foundry.cli import main

    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    write_distribution(site, "foundry-plugin-wrong", "0.3", {"tp_wrong": f"""
        import attrs
        from model_foundry.plugin import hookimpl
        from model_foundry.records import ArchitectureSchema

        @attrs.frozen
        class Config:
            width: int = 1

        @hookimpl
        def foundry_config_schemas():
            {body}
    """}, {"wrong": "tp_wrong"})
    assert {a["distribution"] for a in model_foundry.list_architectures()} >= {"foundry-plugin-widget"}
    assert "foundry-plugin-wrong" not in {a["distribution"] for a in model_foundry.list_architectures()}
    [error] = [e for e in model_foundry.plugin_errors() if e["distribution"] == "foundry-plugin-wrong"]
    assert error["stage"] == "foundry_config_schemas" and "TypeError" in error["error"], error
    assert "ArchitectureSchema" in error["error"] or "expected a string" in error["error"]
    config = tmp_path / "widget.yaml"
    config.write_text("model:\n  architecture: widget\n  preset: tiny\n", encoding="utf-8")
    for argv in (["list"], ["plugins"], ["validate", str(config), "--model-only"]):
        assert main(argv) == 0, (argv, capsys.readouterr())
    assert "foundry-plugin-wrong" in capsys.readouterr().out


@pytest.mark.parametrize("raising", ["import sys\nsys.exit(3)\n", "raise KeyboardInterrupt\n", "raise SystemExit('bye')\n"])
def test_a_plugin_that_exits_or_interrupts_at_import_is_isolated(site, raising):
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    write_distribution(site, "foundry-plugin-exits", "0.1", {"tp_exits": raising}, {"exits": "tp_exits"})
    assert "widget" in [a["name"] for a in model_foundry.list_architectures()]
    [error] = [e for e in model_foundry.plugin_errors() if e["distribution"] == "foundry-plugin-exits"]
    assert error["stage"] == "import" and error["error"].split(":")[0] in ("SystemExit", "KeyboardInterrupt")


def test_allow_and_block_lists_are_stripped_and_an_unknown_allowed_name_is_a_warning(site, monkeypatch, capsys):
    from model_foundry.cli import main

    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    good(site, "foundry-plugin-gadget", "gadget", "tp_gadget")
    monkeypatch.setenv("FOUNDRY_PLUGINS_ALLOW", "foundry-plugin-widgte , foundry-plugin-gadget ")
    monkeypatch.setenv("FOUNDRY_PLUGINS_BLOCK", " foundry-plugin-none,  foundry-plugin-gadget")
    assert model_foundry.list_architectures() == []
    assert main(["list"]) == 0
    err = capsys.readouterr().err
    assert "FOUNDRY_PLUGINS_ALLOW names 'foundry-plugin-widgte', which matches no installed plugin distribution; " \
           "did you mean 'foundry-plugin-widget'?" in err, err
    assert "names 'foundry-plugin-gadget'" not in err  # stripped of its spaces, it matched (and was then blocked)
    statuses = {r["distribution"]: r["status"] for r in model_foundry.list_plugins()}
    assert statuses["foundry-plugin-gadget"] == "blocked" and statuses["foundry-plugin-widget"] == "blocked"


def test_slow_plugin_imports_and_imports_of_torch_are_reported(tmp_path):
    write_distribution(tmp_path, "foundry-plugin-slow", "0.1", {"tp_slow": "import time\ntime.sleep(0.6)\n"},
                       {"slow": "tp_slow"})
    write_distribution(tmp_path, "foundry-plugin-heavy", "0.1", {"tp_heavy": "import torch\n"}, {"heavy": "tp_heavy"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "model_foundry.cli", "plugins", "--json"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["distribution"]: r for r in json.loads(result.stdout)}
    assert rows["foundry-plugin-slow"]["import_seconds"] >= 0.6
    assert rows["foundry-plugin-heavy"]["heavy_imports"] == ["torch"]
    assert rows["foundry-plugin-gpt2"]["heavy_imports"] == []
    text = subprocess.run([sys.executable, "-m", "model_foundry.cli", "plugins"],
                          capture_output=True, text=True, env=env, timeout=120).stdout
    assert "warning: foundry-plugin-slow 0.1 (slow): importing its entry point took" in text, text
    assert "warning: foundry-plugin-heavy 0.1 (heavy): importing its entry point imports torch" in text, text


def test_every_hook_specification_names_the_record_it_answers():
    """The record type a hook's answer is checked against is its specification's annotation: one source."""
    import attrs

    from model_foundry import discovery, hookspecs

    hooks = {name for name in vars(hookspecs) if name.startswith("foundry_")}
    assert hooks == set(discovery.RECORD_KEYS)
    for hook in hooks:
        record, key = discovery.record_type(hook), discovery.RECORD_KEYS[hook]
        assert attrs.has(record) and record.__module__ == "model_foundry.records", (hook, record)
        assert key is None or key in attrs.fields_dict(record), (hook, key)


def test_the_core_declares_only_package_data_that_exists():
    import glob
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    for pattern in pyproject["tool"]["setuptools"]["package-data"]["model_foundry"]:
        assert glob.glob(str(root / "core" / "model_foundry" / pattern), recursive=True), pattern


def test_trace_plugins_prints_what_discovery_did_and_each_hook_call(site, monkeypatch, capsys):
    good(site, "foundry-plugin-widget", "widget", "tp_widget")
    good(site, "foundry-plugin-gadget", "gadget", "tp_gadget")
    monkeypatch.setenv("FOUNDRY_PLUGINS_BLOCK", "foundry-plugin-gadget")
    monkeypatch.setenv("FOUNDRY_TRACE_PLUGINS", "1")
    model_foundry.list_architectures()
    lines = capsys.readouterr().err.splitlines()
    assert "foundry trace: entry point gadget = tp_gadget (foundry-plugin-gadget 1.2.3): not imported, blocked by " \
           "FOUNDRY_PLUGINS_BLOCK" in lines, lines
    for pattern in (r"entry point widget = tp_widget \(foundry-plugin-widget 1\.2\.3\): imported in [0-9.]+ ms",
                    r"foundry_config_schemas foundry-plugin-widget:widget: 1 record\(s\) in [0-9.]+ ms",
                    r"foundry_model_builders foundry-plugin-widget:widget: 1 record\(s\) in [0-9.]+ ms",
                    r"foundry_collators model-foundry:builtins: 2 record\(s\) in [0-9.]+ ms"):
        assert any(re.fullmatch("foundry trace: " + pattern, line) for line in lines), (pattern, lines)
    monkeypatch.delenv("FOUNDRY_TRACE_PLUGINS")
    set_registry(None)
    model_foundry.list_architectures()
    assert "foundry trace" not in capsys.readouterr().err
