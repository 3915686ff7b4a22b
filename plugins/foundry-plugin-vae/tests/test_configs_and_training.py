"""Configs, bad input, modalities and sizes, and short runs through the command line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from model_foundry import FoundryError, cli, create_model, load

PLUGIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(PLUGIN))


def run_cli(*args: str) -> int:
    return cli.main(list(args))


@pytest.mark.parametrize(
    "model, message",
    [
        ("  architecture: vae\n  encoder:\n    latent_dim: 0\n",
         r"bad.yaml:4:17: model.encoder.latent_dim: must be > 0, got 0"),
        ("  architecture: vae\n  decoder:\n    hidden_dims: [8, 8, 8, 8]\n",
         r"bad.yaml:4:18: model.decoder.hidden_dims: a conv decoder with 4 stride-2 upsampling stages .* use at most 3"),
        ("  architecture: vq_vae\n  codebook_size: 1\n", r"bad.yaml:3:18: model.codebook_size: must be >= 2, got 1"),
        ("  architecture: vq_vae\n  code_dim: 3\n", r"bad.yaml:3:13: model.code_dim: must divide encoder.latent_dim \(16\)"),
        ("  architecture: vae\n  decoder:\n    output_shape: [1, 28, 28]\n",
         r"bad.yaml:4:19: model.decoder.output_shape: must equal encoder.input_shape \[1, 8, 8\]"),
        ("  architecture: beta_vae\n  decoder:\n    latent_dim: 3\n",
         r"bad.yaml:4:17: model.decoder.latent_dim: must equal encoder.latent_dim \(16\), got 3"),
        ("  architecture: vae\n  num_classes: 10\n", r"bad.yaml:3:3: model.num_classes: unknown key 'num_classes'"),
    ],
)
def test_bad_configs_are_located_errors_with_exit_code_2(tmp_path, capsys, model, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n{model}data:\n  kind: digits\n")
    assert run_cli("validate", str(path)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_data_of_another_shape_and_conditions_for_an_unconditional_model_are_clear_errors():
    model = create_model({"architecture": "vae", "preset": "tiny"})
    with pytest.raises(FoundryError, match=r"built for examples of shape \[1, 8, 8\].*have shape \[1, 28, 28\]; set model.encoder.input_shape and model.decoder.output_shape to \[1, 28, 28\]"):
        model(pixel_values=torch.zeros(2, 1, 28, 28))
    with pytest.raises(FoundryError, match="unconditional; sample without conditions"):
        model.sample(2, conditions=torch.tensor([0, 1]))
    with pytest.raises(FoundryError, match="unconditional"):
        create_model({"architecture": "vq_vae", "preset": "tiny"}).sample(2, conditions=torch.tensor([0, 1]))
    conditional = create_model({"architecture": "conditional_vae", "preset": "tiny", "num_classes": 3})
    with pytest.raises(FoundryError, match="needs class_labels"):
        conditional(pixel_values=torch.zeros(2, 1, 8, 8))
    with pytest.raises(FoundryError, match=r"0\.\.2, got \[3\]"):
        conditional.sample(1, conditions=torch.tensor([3]))


@pytest.mark.parametrize("architecture", ["vae", "vq_vae"])
@pytest.mark.parametrize("shape, hidden", [([1, 28, 28], [8, 16]), ([3, 32, 32], [8, 16, 16])])
def test_larger_images_encode_decode_and_sample(architecture, shape, hidden):
    latent = {"latent_dim": 8}
    model = create_model({
        "architecture": architecture, "preset": "tiny", "levels": 256,
        "encoder": {"input_shape": shape, "hidden_dims": hidden, **latent},
        "decoder": {"output_shape": shape, "hidden_dims": hidden[::-1], **latent},
    })
    images = torch.rand(2, *shape) * 2 - 1
    assert model.decode(model.encode(pixel_values=images)).shape == (2, *shape)
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *shape)
    assert torch.isfinite(model.log_prob(pixel_values=images)).all()


def test_the_conditional_vae_decodes_each_requested_class():
    torch.manual_seed(0)
    model = create_model({"architecture": "conditional_vae", "preset": "tiny", "num_classes": 2})
    latents = model.encode(pixel_values=torch.zeros(2, 1, 8, 8), class_labels=torch.tensor([0, 1]))
    assert latents.shape == (2, 4 + 2) and latents[:, 4:].tolist() == [[1, 0], [0, 1]]  # the one-hot class rides along
    with torch.no_grad():
        model.decoder.project.weight[:, :4] = 0  # the decoder now reads the class only
    first, second = torch.randn(2, 4), torch.randn(2, 4)
    by_class = model.decode(torch.cat([first, torch.eye(2)], dim=-1))
    torch.testing.assert_close(by_class, model.decode(torch.cat([second, torch.eye(2)], dim=-1)))
    assert (by_class[0] - by_class[1]).abs().max() > 1e-3
    samples = model.sample(4, generator=torch.Generator().manual_seed(0), conditions=torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(samples, by_class.clamp(-1, 1).detach().repeat(2, 1, 1, 1))


def write_config(tmp_path, model, data, steps=6):
    config = {
        "model": model, "data": data,
        "training": {"max_steps": steps, "batch_size": 16, "learning_rate": 2e-3, "warmup_steps": 1, "log_every": 3,
                     "eval_every": steps, "eval_batches": 2, "eval_samples": 20, "save_every": 0,
                     "output_dir": str(tmp_path / "run")},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def records(tmp_path):
    with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_a_vq_vae_trains_on_28x28_npy_images_and_logs_its_codebook_perplexity(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    model = {
        "architecture": "vq_vae", "preset": "tiny", "levels": 256, "ema_updates": True,
        "encoder": {"input_shape": [1, 28, 28], "latent_dim": 8, "hidden_dims": [8, 8]},
        "decoder": {"output_shape": [1, 28, 28], "latent_dim": 8, "hidden_dims": [8, 8]},
    }
    data = {"kind": "npy", "path": str(tmp_path / "images.npy"), "modality": "image", "validation_fraction": 0.2}
    assert run_cli("train", write_config(tmp_path, model, data)) == 0
    logged = records(tmp_path)
    trained = [r for r in logged if "loss" in r]
    assert all(1 <= r["codebook_perplexity"] <= 8 for r in trained), trained
    assert {"reconstruction_loss", "commitment_loss", "prior_loss"} <= set(trained[-1])
    assert "bits_per_dim" in logged[-1]
    assert os.path.exists(tmp_path / "run" / "samples" / "step-6" / "samples.png")


def test_a_vector_vae_trains_on_toy_points_and_a_conditional_one_on_digits(tmp_path):
    model = {
        "architecture": "vae", "likelihood": "gaussian", "sample_noise": True,
        "encoder": {"input_shape": [2], "latent_dim": 2, "hidden_dims": [16]},
        "decoder": {"output_shape": [2], "latent_dim": 2, "hidden_dims": [16]},
    }
    data = {"kind": "toy", "name": "moons", "num_samples": 200}
    assert run_cli("train", write_config(tmp_path / "toy", model, data)) == 0
    loaded = load(str(tmp_path / "toy" / "run" / "final"))
    assert loaded.config.modality == "vector" and loaded.sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 2)
    model = {"architecture": "conditional_vae", "preset": "tiny"}
    assert run_cli("train", write_config(tmp_path / "digits", model, {"kind": "digits"})) == 0
    last = records(tmp_path / "digits")[-1]
    assert {"bits_per_dim", "digits_score", "digits_fid"} <= set(last)
