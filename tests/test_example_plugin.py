"""The worked example of docs/writing-a-modality-plugin.md, end to end: foundry-plugin-gaussian
(tests/example-plugin/) is an installed distribution, listed, validated, trained with
``foundry train``, sampled with ``foundry sample``, evaluated with ``foundry eval``, saved and
loaded. And the conformance kit, which the plugin passes in its own tests, fails models that
break the protocol of a capability."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

import model_foundry
from model_foundry import cli
from model_foundry.records import ModelBuilder
from model_foundry.testing import isolated_registry
from model_foundry.testing.conformance import (
    check_log_prob,
    check_sampling,
    check_save_load,
    check_training_step,
)

EXAMPLE = Path(__file__).parent / "example-plugin" / "foundry-plugin-gaussian"
TOY_CONFIG = EXAMPLE / "configs" / "toy.yaml"


def foundry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model_foundry.cli", *args], capture_output=True, text=True, timeout=120)


def test_the_example_is_an_installed_distribution_that_foundry_lists():
    (entry,) = [e for e in metadata.entry_points(group="model_foundry") if e.value == "foundry_plugin_gaussian.plugin"]
    assert entry.dist.metadata["Name"] == "foundry-plugin-gaussian"
    listed = foundry("list", "gaussian*")
    assert listed.returncode == 0, listed.stderr
    assert "gaussian_mixture" in listed.stdout and "sampling, likelihood (exact), conditional" in listed.stdout
    (record,) = json.loads(foundry("list", "gaussian*", "--json").stdout)
    assert record["distribution"] == "foundry-plugin-gaussian" and record["modalities"] == ["vector", "image"]
    assert record["capabilities"]["likelihood"] == "exact" and record["capabilities"]["sampling"]
    info = foundry("info", "gaussian_mixture")
    assert "capabilities: sampling, likelihood (exact), conditional" in info.stdout and "num_components" in info.stdout
    validated = foundry("validate", str(TOY_CONFIG))
    assert validated.returncode == 0 and "OK" in validated.stdout, validated.stderr


def test_build_sizes_the_model_for_its_datas_modality(capsys):
    # digits are images: one mixture of 8 components over 64 pixels per class, 10 classes.
    assert cli.main(["build", str(EXAMPLE / "configs" / "digits.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_parameters"] == 10 * 8 + 2 * 10 * 8 * 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The README's run of configs/toy.yaml, shortened: ``foundry train`` for 40 steps."""
    run = tmp_path_factory.mktemp("run")
    overrides = [f"training.output_dir={run}", "training.max_steps=40", "training.eval_every=20",
                 "training.log_every=20", "data.num_samples=1000"]
    assert cli.main(["train", str(TOY_CONFIG), *[arg for o in overrides for arg in ("--set", o)]]) == 0
    return run


def test_training_writes_a_checkpoint_samples_and_improves(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evaluations) == 2 and evaluations[1] < evaluations[0]
    assert any(trained.glob("samples/*/samples.png"))
    assert model_foundry.load(trained / "final").num_classes == 2


def test_foundry_sample_writes_seeded_samples_of_the_chosen_class(trained, tmp_path, capsys):
    from PIL import Image

    final = str(trained / "final")
    args = ["sample", final, "--num-samples", "200", "--seed", "3", "--condition", "1", "--json"]
    assert cli.main([*args, "--out", str(tmp_path / "moon.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [str(tmp_path / "moon.png"), str(tmp_path / "moon.npy")] and report["modality"] == "vector"
    with Image.open(tmp_path / "moon.png") as image:
        image.verify()
    samples = np.load(tmp_path / "moon.npy")
    assert samples.shape == (200, 2) and samples.dtype == np.float32
    # The same seed, and the loaded model, give the same samples; the other moon lies elsewhere.
    model = model_foundry.load(final)
    again = model.sample(200, generator=torch.Generator().manual_seed(3), conditions=torch.full((200,), 1))
    np.testing.assert_array_equal(again.numpy(), samples)
    assert cli.main(["sample", final, "--num-samples", "200", "--seed", "3", "--condition", "0", "--out", str(tmp_path / "other")]) == 0
    other = np.load(tmp_path / "other.npy")
    assert np.linalg.norm(other.mean(0) - samples.mean(0)) > 0.5


def test_the_checkpoint_keeps_the_datas_info_and_sample_hands_it_to_the_writer(trained, tmp_path, monkeypatch, capsys):
    from model_foundry.checkpoint import read_meta
    from model_foundry.commands import sample

    final = str(trained / "final")
    # What the data said when it was loaded (no config field holds it, e.g. a WAV folder's sample rate).
    assert read_meta(final)["data_info"]["num_classes"] == 2
    seen = {}
    real = sample.write_samples
    monkeypatch.setattr(sample, "write_samples", lambda *a: seen.update(a[3]) or real(*a))
    assert cli.main(["sample", final, "--num-samples", "4", "--seed", "0", "--out", str(tmp_path / "s")]) == 0
    assert seen["num_classes"] == 2 and seen["kind"] == "toy"  # the data's info over the saved data section


def test_foundry_eval_scores_the_validation_split(trained, capsys):
    final = str(trained / "final")
    assert cli.main(["eval", final, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["modality"] == "vector" and report["examples"] == 100 and np.isfinite(report["eval_loss"])
    metrics = json.loads((trained / "final" / "foundry.json").read_text())["metrics"]
    assert report["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert cli.main(["eval", final, "--set", "data.validation_fraction=0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 500
    assert cli.main(["eval", final]) == 0
    assert "eval_loss" in capsys.readouterr().out


# --- the kit catches what breaks each capability's protocol -------------------------------------


def _faulty(fault: str):
    """A plugin whose ``gaussian_mixture`` model has ``fault``, under the same name and config."""
    from foundry_plugin_gaussian import plugin
    from foundry_plugin_gaussian.model import GaussianMixture

    from model_foundry.plugin import hookimpl

    class Faulty(GaussianMixture):
        builds = 0

        def __init__(self, config):
            super().__init__(config)
            Faulty.builds += 1
            self.register_buffer("shift", torch.tensor(float(Faulty.builds)), persistent=False)  # state never saved

        def sample(self, num_samples, *, generator=None, conditions=None):
            if fault == "unseeded":
                generator = None
            samples = super().sample(num_samples, generator=generator, conditions=conditions)
            if fault == "unsaved":
                return samples + self.shift
            return samples.double() if fault == "float64" else samples.flatten()[:num_samples] if fault == "layout" else samples

        def log_prob(self, **batch):
            values = super().log_prob(**batch)
            return values - values.mean() if fault == "batch-dependent" else values

        def forward(self, **batch):
            output = super().forward(**batch)
            if fault == "reversed-gradient":  # the same value, the gradient reversed: training climbs the loss
                output.loss = 2 * output.loss.detach() - output.loss
            return output

    class Plugin:
        @hookimpl
        def foundry_config_schemas(self):
            return plugin.foundry_config_schemas()

        @hookimpl
        def foundry_model_builders(self):
            return [ModelBuilder("gaussian_mixture", lambda config: Faulty(config))]

    return Plugin()


@pytest.mark.parametrize(
    ("fault", "check", "message"),
    [
        ("unseeded", check_sampling, "the same seed gave different samples"),
        ("float64", check_sampling, "not float32"),
        ("layout", check_sampling, r"vector samples must be \(N, D\)"),
        ("batch-dependent", check_log_prob, "log_prob depends on the batch"),
        ("reversed-gradient", check_training_step, "did not lower the loss"),
        ("unsaved", check_save_load, "differ after save -> load"),
    ],
)
def test_the_kit_fails_a_model_that_breaks_the_protocol(fault, check, message):
    with isolated_registry(_faulty(fault)):
        with pytest.raises(AssertionError, match=message):
            check("gaussian_mixture")


def test_the_kit_passes_the_faultless_model_registered_the_same_way():
    with isolated_registry(_faulty("none")):
        for check in (check_sampling, check_log_prob, check_training_step, check_save_load):
            check("gaussian_mixture")
