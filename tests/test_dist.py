"""The distributions as users get them: `make dist` builds wheels, pip installs them into a fresh
virtual environment (torch first, then `pip install --find-links dist foundry-plugin-bert`, which
must bring model-foundry in as a dependency), and they work there, away from this checkout.

Slow (a new environment and its dependencies: minutes), and part of the default run, as CI runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FORWARD = """
import torch, model_foundry
model = model_foundry.create_model("bert", preset="tiny", vocab_size=50)
print(tuple(model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape), model_foundry.__file__)
"""


def run(command, **kwargs) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=1500, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_wheels_install_alone_in_a_fresh_environment(tmp_path):
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    packages = ". plugins/foundry-plugin-bert plugins/foundry-plugin-gpt2"
    run(["make", "-s", "dist", f"DIST={dist}", f"DIST_PACKAGES={packages}", f"VENV={sys.prefix}"], cwd=ROOT)
    built = sorted(path.name for path in dist.iterdir())
    assert built == [
        "foundry_plugin_bert-0.1.0-py3-none-any.whl", "foundry_plugin_bert-0.1.0.tar.gz",
        "foundry_plugin_gpt2-0.1.0-py3-none-any.whl", "foundry_plugin_gpt2-0.1.0.tar.gz",
        "model_foundry-0.1.0-py3-none-any.whl", "model_foundry-0.1.0.tar.gz",
    ], built

    run([sys.executable, "-m", "venv", venv])
    pip, python, foundry = venv / "bin" / "pip", venv / "bin" / "python", venv / "bin" / "foundry"
    run([pip, "install", "-q", "torch==2.13.0"])
    run([pip, "install", "-q", "--find-links", dist, "foundry-plugin-bert"])
    # Away from the checkout: nothing may come from it.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    installed = {row["name"].lower(): row["version"] for row in json.loads(run([pip, "list", "--format", "json"]))}
    assert installed["model-foundry"] == "0.1.0"  # brought in as the plugin's dependency
    listed = json.loads(run([foundry, "list", "--json"], env=env, cwd=tmp_path))
    assert [record["name"] for record in listed] == ["bert"]
    shape, location = run([python, "-c", FORWARD], env=env, cwd=tmp_path).rsplit(" ", 1)
    assert shape.strip() == "(1, 3, 50)" and Path(location.strip()).is_relative_to(venv)

    run([pip, "install", "-q", "--find-links", dist, "foundry-plugin-gpt2"])
    listed = json.loads(run([foundry, "list", "--json"], env=env, cwd=tmp_path))
    assert sorted(record["name"] for record in listed) == ["bert", "gpt2"]
