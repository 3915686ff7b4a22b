"""The distributions as users get them: `make dist` builds the wheels of the core and of every plugin,
pip installs them into a fresh virtual environment, and they work there, away from this checkout.

- `pip install --find-links dist foundry-plugin-bert` brings model-foundry in as a dependency,
  `foundry list` shows bert alone, it builds and runs; a second plugin joins it.
- Each plugin stands alone: with only torch, pytest, the core and that plugin installed (and what
  its pyproject declares), `foundry list` shows that plugin alone and its own tests pass, run as
  its own repository would run them: without this repository's conftest.py, pytest settings,
  tests/ helpers or other plugins. The environment is built once; after each plugin, everything
  the plugin brought in is uninstalled, so the next one sees none of it.

Slow (a new environment, every distribution built, every plugin's tests run again: minutes), and
part of the default run, as CI runs it. `make test-plugins-alone` runs this file alone.
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
PLUGINS = sorted(path.parent.name for path in ROOT.glob("plugins/*/pyproject.toml"))
FORWARD = """
import torch, model_foundry
model = model_foundry.create_model("bert", preset="tiny", vocab_size=50)
print(tuple(model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape), model_foundry.__file__)
"""


def run(command, **kwargs) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=1500, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def wheel(dist: Path, distribution: str) -> Path:
    (path,) = dist.glob(f"{distribution.replace('-', '_')}-*.whl")
    return path


class Environment:
    """A virtual environment holding torch, pytest and the core's wheel, and commands run in it away
    from the checkout (another working directory, no PYTHONPATH)."""

    def __init__(self, root: Path, dist: Path):
        self.root, self.venv, self.dist = root, root / "venv", dist
        run([sys.executable, "-m", "venv", self.venv])
        self.pip("install", "-q", "torch==2.13.0", "pytest")
        self.pip("install", "-q", wheel(dist, "model-foundry"))
        self.baseline = set(self.installed())
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
        self.env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
                        TOKENIZERS_PARALLELISM="false", PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    def pip(self, *args) -> str:
        return run([self.venv / "bin" / "pip", *args])

    def __call__(self, program, *args, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.venv / "bin" / program), *map(str, args)], capture_output=True, text=True,
                              timeout=1500, env=self.env, cwd=cwd or self.root)

    def installed(self) -> dict[str, str]:
        return {row["name"].lower(): row["version"] for row in json.loads(self.pip("list", "--format", "json"))}

    def listed(self) -> list[tuple[str, str]]:
        result = self("foundry", "list", "--json")
        assert result.returncode == 0, result.stderr
        return [(record["name"], record["distribution"]) for record in json.loads(result.stdout)]

    def reset(self) -> None:
        """Back to the baseline: what a test installed goes, and the core is there again."""
        extra = sorted(set(self.installed()) - self.baseline)
        if extra:
            self.pip("uninstall", "-q", "-y", *extra)
        self.pip("install", "-q", wheel(self.dist, "model-foundry"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    packages = " ".join([".", *(f"plugins/{name}" for name in PLUGINS)])
    # -o: this environment is set up already; a pyproject edited since must not reinstall it mid-run.
    run(["make", "-s", "-o", f"{sys.prefix}/.foundry-installed", "dist", f"DIST={dist}", f"DIST_PACKAGES={packages}",
         f"VENV={sys.prefix}"], cwd=ROOT)
    return dist


@pytest.fixture(scope="module")
def environment(tmp_path_factory, dist):
    return Environment(tmp_path_factory.mktemp("environment"), dist)


def test_every_distribution_is_built(dist):
    names = sorted(path.name for path in dist.iterdir())
    expected = [f"{name.replace('-', '_')}-0.1.0{end}" for name in ["model-foundry", *PLUGINS]
                for end in ("-py3-none-any.whl", ".tar.gz")]
    assert names == sorted(expected)


def test_wheels_install_alone_in_a_fresh_environment(environment):
    environment.pip("uninstall", "-q", "-y", "model-foundry")
    try:
        environment.pip("install", "-q", "--find-links", environment.dist, "foundry-plugin-bert")
        assert environment.installed()["model-foundry"] == "0.1.0"  # brought in as the plugin's dependency
        assert environment.listed() == [("bert", "foundry-plugin-bert")]
        result = environment("python", "-c", FORWARD)
        assert result.returncode == 0, result.stderr
        shape, location = result.stdout.rsplit(" ", 1)
        assert shape.strip() == "(1, 3, 50)" and Path(location.strip()).is_relative_to(environment.venv)

        environment.pip("install", "-q", "--find-links", environment.dist, "foundry-plugin-gpt2")
        assert sorted(name for name, _ in environment.listed()) == ["bert", "gpt2"]
    finally:
        environment.reset()


@pytest.mark.parametrize("plugin", PLUGINS)
def test_each_plugin_passes_its_own_tests_alone(environment, plugin):
    source = ROOT / "plugins" / plugin
    package = plugin.replace("-", "_")
    try:
        environment.pip("install", "-q", wheel(environment.dist, plugin))
        listed = environment.listed()
        assert listed and {distribution for _, distribution in listed} == {plugin}, listed
        where = environment("python", "-c", f"import {package}; print({package}.__file__)")
        assert Path(where.stdout.strip()).is_relative_to(environment.venv), where.stdout + where.stderr
        # The plugin's own pyproject as pytest's configuration: rootdir and confcutdir stop at the plugin's
        # folder, so the repository's conftest.py and pytest settings (tests/ on the path) do not apply.
        tests = environment("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                            "-c", source / "pyproject.toml", "--rootdir", source, "--confcutdir", source,
                            source / "tests")
        assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    finally:
        environment.reset()
