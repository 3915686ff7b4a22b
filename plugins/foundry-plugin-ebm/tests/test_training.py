"""Training through the core's loop: exact resume with the replay buffer, located config errors, the example configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from model_foundry import ConfigError, load_config

PLUGIN = Path(__file__).resolve().parents[1]
CONFIGS = sorted((PLUGIN.parents[1] / "configs").glob("*ebm-*.yaml"))


def write_config(tmp_path, model=None, training=None, name="config.yaml"):
    config = {
        "model": {
            "architecture": "ebm", "input_shape": [2], "energy_network": {"hidden_dims": [16]},
            "mcmc": {"n_steps": 3, "step_size": 0.01}, "sample_buffer": {"capacity": 96, "reinit_prob": 0.2},
            **(model or {}),
        },
        "data": {"kind": "toy", "name": "8gaussians", "num_samples": 400},
        "training": {
            "max_steps": 8, "batch_size": 32, "learning_rate": 0.01, "warmup_steps": 0, "lr_scheduler": "constant", "log_every": 1,
            "eval_every": 4, "eval_samples": 8, "save_every": 4, "output_dir": str(tmp_path / "run"), **(training or {}),
        },
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def records(run):
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed", "samples_per_sec")} for line in lines]


def test_resume_continues_the_replay_buffer_bit_for_bit(tmp_path):
    """Stopped at step 4 and resumed, every logged loss, the weights and the buffer equal an uninterrupted run's."""
    from model_foundry.training import train

    path = write_config(tmp_path)
    full = train(load_config(path))
    expected = records(tmp_path / "run")
    train(load_config(path, ["training.max_steps=4"]), overwrite=True)
    resumed = train(load_config(path), resume=True)
    assert records(tmp_path / "run") == expected
    before, after = full.model.state_dict(), resumed.model.state_dict()
    assert before.keys() == after.keys() and "replay_buffer" in before
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(full.model.replay_buffer[:32], torch.zeros(32, 2))
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "run" / "checkpoint-4" / "model.safetensors"))
    assert saved["replay_buffer"].shape == (96, 2)  # the buffer is in every checkpoint, as safetensors


BAD_VALUES = [
    ("mcmc", "step_size", 0, "must be > 0"),
    ("mcmc", "step_size", -0.5, "must be > 0"),
    ("mcmc", "n_steps", 0, "must be > 0"),
    ("mcmc", "noise_scale", -1.0, "must be >= 0"),
    ("sample_buffer", "capacity", 0, "must be > 0"),
    ("sample_buffer", "reinit_prob", 1.5, "must be in [0, 1]"),
    ("sample_buffer", "reinit_prob", -0.1, "must be in [0, 1]"),
]


@pytest.mark.parametrize(("block", "key", "value", "message"), BAD_VALUES)
def test_bad_sampler_and_buffer_settings_are_located_config_errors(tmp_path, block, key, value, message):
    path = write_config(tmp_path, model={block: {key: value}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}:" in str(caught.value) and f"model.{block}.{key}: {message}" in str(caught.value)


def test_foundry_validate_reports_every_bad_setting_at_its_line_without_a_traceback(tmp_path):
    path = write_config(tmp_path, model={
        "mcmc": {"step_size": 0.0}, "sample_buffer": {"capacity": 0, "reinit_prob": 2.0}, "alpha": -1.0,
        "input_shape": [1, 8],
    })
    result = subprocess.run([sys.executable, "-m", "model_foundry.cli", "validate", str(path)], capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr
    lines = yaml.safe_dump(yaml.safe_load(path.read_text())).splitlines()
    for key, message in [("step_size", "model.mcmc.step_size: must be > 0"),
                         ("capacity", "model.sample_buffer.capacity: must be > 0"),
                         ("reinit_prob", "model.sample_buffer.reinit_prob: must be in [0, 1]"),
                         ("alpha", "model.alpha: must be >= 0")]:
        line = next(number for number, text in enumerate(lines, 1) if text.strip().startswith(f"{key}:"))
        assert f"{path}:{line}:" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_example_configs_validate(config):
    loaded = load_config(config)
    assert loaded.model.architecture in ("ebm", "deep_ebm")
