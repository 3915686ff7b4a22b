"""The `foundry` command line, run as a user runs it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_foundry.cli import COMMANDS
from model_foundry.testing import write_distribution

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An environment where the toy architecture is an installed third-party distribution."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(TESTS / "toy_plugin.py", site / "toy_plugin.py")
    write_distribution(site, "foundry-plugin-toy", "0.3.0", entry_points={"toy": "toy_plugin:PLUGIN"})
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def foundry(env, *args):
    return subprocess.run([sys.executable, "-m", "model_foundry.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def test_help_everywhere(env):
    assert foundry(env, "--help").returncode == 0
    for command in COMMANDS:
        name = command.replace("_", "-")
        result = foundry(env, name, "--help")
        assert result.returncode == 0, (name, result.stderr)
        assert "usage: foundry" in result.stdout


def test_validate_good_and_bad(env, tmp_path):
    good = write(tmp_path, "model:\n  architecture: toy\n  preset: tiny\ntraining:\n  max_steps: 10\n  warmup_steps: 1\n")
    result = foundry(env, "validate", good)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr
    bad = write(tmp_path, "model:\n  architecture: toy\n  preset: tiny\n  block:\n    layrs: 2\n", "bad.yaml")
    result = foundry(env, "validate", bad, "--set", "training.max_steps=zero")
    assert result.returncode == 2
    assert f"{bad}:5:5: model.block.layrs: unknown key 'layrs'; did you mean 'layers'?" in result.stderr
    assert "training.max_steps: expected an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_resolved_json_and_sections(env, tmp_path):
    path = write(tmp_path, "model:\n  architecture: toy\n  preset: tiny\ndatasets:\n  - name: x\n")
    assert foundry(env, "validate", path).returncode == 2
    result = foundry(env, "validate", path, "--model-only", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"]["block"]["layers"] == 1
    result = foundry(env, "validate", path, "--data-only")
    assert result.returncode == 2 and "no 'data' section" in result.stderr


@pytest.mark.parametrize("text", ["", "model: [", "model:\n\tarchitecture: toy\n", "- a\n", "a: 1\na: 2\n"])
def test_malformed_yaml_exits_2_with_location(env, tmp_path, text):
    path = write(tmp_path, text)
    result = foundry(env, "validate", path)
    assert result.returncode == 2
    assert f"{path}:" in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file(env, tmp_path):
    result = foundry(env, "validate", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_list_info_schema(env):
    records = json.loads(foundry(env, "list", "--json").stdout)
    toy = next(r for r in records if r["name"] == "toy")
    assert toy["distribution"] == "foundry-plugin-toy" and toy["version"] == "0.3.0"
    assert foundry(env, "list", "to?").stdout.count("toy") >= 1
    info = foundry(env, "info", "toy")
    assert info.returncode == 0 and "block.layers" in info.stdout and "tiny" in info.stdout
    assert json.loads(foundry(env, "info", "toy", "--json").stdout)["preset_values"]["tiny"]["block"]["layers"] == 1
    schema = json.loads(foundry(env, "schema", "toy").stdout)
    assert schema["properties"]["architecture"]["const"] == "toy"
    unknown = foundry(env, "info", "tyo")
    assert unknown.returncode == 2 and "did you mean 'toy'?" in unknown.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name,modality", [("mygru", "text"), ("myvae", "image")])
def test_new_plugin_template_is_a_working_plugin(env, tmp_path, name, modality):
    result = foundry(env, "new-plugin", name, "--dir", str(tmp_path), "--modality", modality)
    assert result.returncode == 0, result.stderr
    root = tmp_path / f"foundry-plugin-{name}"
    assert (root / "pyproject.toml").exists() and (root / f"foundry_plugin_{name}" / "plugin.py").exists()
    assert "*.egg-info/" in (root / ".gitignore").read_text()
    again = foundry(env, "new-plugin", name, "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert foundry(env, "new-plugin", "My-Plugin").returncode == 2
    # Make it "installed" (a dist-info with its entry point) and run its own tests (the image
    # template's train on the digits and sample).
    write_distribution(root, f"foundry-plugin-{name}", "0.1.0", entry_points={name: f"foundry_plugin_{name}.plugin"})
    run_env = {**env, "PYTHONPATH": f"{root}{os.pathsep}{env['PYTHONPATH']}"}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           capture_output=True, text=True, env=run_env, cwd=root, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]


# --- sample, generate and eval on saved models of each modality ----------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Models saved without training: a tiny gpt2 with a char tokenizer and its ``--to hf`` export; a
    conditional gaussian_mixture of 2-D points; an 8x8-image one whose EMA weights (its initial ones)
    differ from its weights, with the samples those EMA weights draw for seed 0."""
    import torch

    import model_foundry
    from model_foundry.cli import main
    from model_foundry.config import FoundryConfig
    from model_foundry.extensions import EMAConfig, build_extensions, save_extension_states
    from model_foundry.factory import train_tokenizer

    root = tmp_path_factory.mktemp("saved")
    tokenizer = train_tokenizer({"tokenizer_type": "char", "vocab_size": 100, "min_frequency": 1}, [TESTS / "data" / "english.txt"])
    text = model_foundry.create_model("gpt2", preset="tiny", vocab_size=len(tokenizer))
    model_foundry.save(text, root / "gpt2", tokenizer=tokenizer)
    assert main(["export", str(root / "gpt2"), "--to", "hf", str(root / "gpt2-hf")]) == 0
    model_foundry.save(model_foundry.create_model("gaussian_mixture", preset="tiny", num_classes=2), root / "points")
    images = model_foundry.create_model({"architecture": "gaussian_mixture", "data_shape": [1, 8, 8]}, modality="image")
    extensions = build_extensions({"ema": EMAConfig()}, images)
    ema_samples = images.sample(6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        images.means.add_(5.0)
    model_foundry.save(images, root / "images", config=FoundryConfig(extensions={"ema": EMAConfig()}),
                       extra=lambda staging: save_extension_states(extensions, staging))
    return {name: str(root / name) for name in ("gpt2", "gpt2-hf", "points", "images")} | {"ema_samples": ema_samples}


def run_cli(capsys, *args):
    from model_foundry.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_sample_draws_with_the_ema_weights_and_writes_the_modalitys_files(saved, tmp_path, capsys):
    import numpy as np

    code, out, _ = run_cli(capsys, "sample", saved["images"], "--num-samples", "6", "--seed", "0", "--out", str(tmp_path / "grid.png"))
    assert code == 0 and f"6 image samples from gaussian_mixture ({saved['images']})" in out
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.load(tmp_path / "grid.npy"), saved["ema_samples"].numpy())


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["sample", "gpt2", "--out", "x"], "a gpt2 model has no sampling capability; it is a text model: use `foundry generate`"),
        (["generate", "images", "--prompt", "a"], "of image data, which does not generate text; draw samples with `foundry sample"),
        (["sample", "images", "--out", "x", "--condition", "0"], "--condition 0: this gaussian_mixture model is unconditional"),
        (["sample", "points", "--out", "x", "--condition", "2"], "--condition 2 is out of range: this gaussian_mixture model has 2 classes, 0 to 1"),
        (["sample", "points", "--out", "x", "--num-samples", "0"], "--num-samples must be >= 1, got 0"),
        (["eval", "points", "--data", "x.txt"], "--data is for text models; this gaussian_mixture model of vector data is scored on the validation split"),
        (["eval", "points"], "holds no data section (it was saved outside `foundry train`)"),
        (["eval", "gpt2"], "a text model is scored on text: give --data FILE"),
        (["eval", "gpt2", "--data", "x.txt", "--set", "data.block_size=8"], "--set changes the data of non-text models"),
    ],
)
def test_each_model_is_sent_to_its_own_verb(saved, tmp_path, capsys, monkeypatch, command, message):
    monkeypatch.chdir(tmp_path)
    verb, name, *rest = command
    code, _, err = run_cli(capsys, verb, saved[name], *rest)
    assert code == 2 and message in err, err
    assert not list(tmp_path.iterdir())


def test_eval_scores_a_transformers_export_like_its_checkpoint(saved, capsys):
    data = str(TESTS / "data" / "english.txt")
    results = []
    for name in ("gpt2", "gpt2-hf"):
        code, out, _ = run_cli(capsys, "eval", saved[name], "--data", data, "--json")
        assert code == 0
        results.append(json.loads(out))
    assert results[0]["blocks"] > 0 and results[1]["eval_loss"] == pytest.approx(results[0]["eval_loss"], rel=1e-5)
