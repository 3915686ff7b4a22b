"""Config errors are located (FILE:LINE:COL: key: message, exit 2); the example configs validate and train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_foundry import ConfigError, load_config
from model_foundry.cli import main

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ["pixelcnn", "wavenet", "transformer"]


@pytest.mark.parametrize("model, key, message", [
    ("architecture: wavenet\n  dilations: []", "model.dilations", "at least one layer's dilation"),
    ("architecture: wavenet\n  dilations: [1, 2, 0, 8]", "model.dilations", r"every dilation must be >= 1, got \[1, 2, 0, 8\]"),
    ("architecture: wavenet\n  dilations: [1, -2]", "model.dilations", ">= 1"),
    ("architecture: wavenet\n  mu_law_levels: 1", "model.mu_law_levels", "must be >= 2"),
    ("architecture: wavenet\n  kernel_size: 1", "model.kernel_size", "must be >= 2"),
    ("architecture: pixelcnn\n  levels: 1", "model.levels", "must be >= 2"),
    ("architecture: pixelcnn\n  kernel_size: 4", "model.kernel_size", "must be odd and >= 3"),
    ("architecture: pixelcnn\n  data_shape: [8, 8]", "model.data_shape", r"\[channels, height, width\]"),
    ("architecture: transformer\n  num_heads: 3", "model.num_heads", "must divide hidden_size"),
    ("architecture: transformer\n  modality: audio\n  data_shape: [1, 8, 8]", "model.data_shape", r"audio needs \[length\]"),
])
def test_bad_values_are_located_errors(tmp_path, capsys, model, key, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n  {model}\n")
    with pytest.raises(ConfigError, match=rf"bad.yaml:\d+:\d+: {key}: .*{message}"):
        load_config(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{key}:" in err


def test_bad_dilations_from_the_command_line_are_located(capsys):
    code = main(["validate", str(ROOT / "configs" / "wavenet.yaml"), "--set", "model.dilations=[]"])
    assert code == 2 and "model.dilations" in capsys.readouterr().err


@pytest.mark.parametrize("name", CONFIGS)
def test_the_example_configs_validate(name):
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    assert config.model.architecture == name


# Each config, shrunk to seconds, through training: the codes' likelihood rises well above the
# untrained model's, and the final checkpoint samples.
SHRUNK = {
    "pixelcnn": ["model.hidden_channels=8", "model.head_channels=16", "model.num_layers=2"],
    "transformer": ["model.hidden_size=16", "model.num_layers=1", "model.num_heads=2"],
    "wavenet": ["model.dilations=[1,2,4]", "model.residual_channels=8", "model.skip_channels=16",
                "model.sample_length=200", "data.num_samples=64", "data.clip_length=200"],
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_example_configs_train_and_sample(tmp_path, name):
    from model_foundry import create_model, load
    from model_foundry.datasets import DataContext, load_data
    from model_foundry.training.loop import train

    overrides = [*SHRUNK[name], "training.max_steps=30", "training.batch_size=16", "training.eval_every=0",
                 "training.warmup_steps=5", "training.log_every=30", f"training.output_dir={tmp_path / 'run'}"]
    config = load_config(ROOT / "configs" / f"{name}.yaml", overrides)
    result = train(config, overrides=tuple(overrides))
    data = load_data(config.data, DataContext(cache_dir=str(tmp_path / "cache")))
    batch = data.validation.batch(range(min(64, len(data.validation))))
    trained, untrained = load(result.final).eval(), create_model(config).eval()
    with torch.no_grad():
        per_value = [model.log_pmf(**batch).mean() / batch[next(iter(batch))][0].numel() for model in (trained, untrained)]
    assert per_value[0] > per_value[1] + 0.1, f"{name}: {per_value[1]:.3f} -> {per_value[0]:.3f} nats per value"
    samples = trained.sample(2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(samples).all() and samples.abs().max() <= 1
