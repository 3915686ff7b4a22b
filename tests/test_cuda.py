"""Every installed architecture on a CUDA device: the conformance checks that run a model run there,
``foundry train`` trains each language model there in full and mixed precision, and seeded sampling
gives the same tokens (``foundry generate``) and samples (``foundry sample``) on any device. Skipped where no CUDA device is present (CI has none); plugins keep their
own device tests (e.g. the Performer's ``tests/test_cuda.py``)."""

from __future__ import annotations

import json

import pytest
import torch

import model_foundry
from model_foundry import cli
from model_foundry.config import load_config, load_model_config, objectives_of
from model_foundry.registry import get_registry
from model_foundry.testing.conformance import check_generation, check_save_load, check_training_step
from model_foundry.text.modeling import sample_next_token

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ARCHITECTURES = sorted(a["name"] for a in model_foundry.list_architectures())
TEXT_ARCHITECTURES = sorted(a["name"] for a in model_foundry.list_architectures() if a["modality"] == "text")
DEVICE = "cuda"


@pytest.mark.parametrize("check", [check_training_step, check_save_load, check_generation], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_conformance_on_cuda(name, check):
    check(name, device="cuda")


def test_a_seeded_cpu_generator_samples_the_same_tokens_on_cuda():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    options = {"do_sample": True, "top_k": 20, "top_p": 0.9}
    on_cpu = sample_next_token(logits, generator=torch.Generator().manual_seed(0), **options)
    on_gpu = sample_next_token(logits.cuda(), generator=torch.Generator().manual_seed(0), **options)
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)


LINES = [
    "Now is the winter of our discontent made glorious summer by this sun of York.",
    "To be, or not to be, that is the question.",
    "All the world's a stage, and all the men and women merely players.",
]


def train_tiny(name, precision, tmp_path):
    """``foundry train`` of the architecture's tiny preset for 30 steps on a few lines of text."""
    from model_foundry.training import train

    text = tmp_path / "train.txt"
    text.write_text("\n".join(LINES * 20) + "\n", encoding="utf-8")
    objective = objectives_of(load_model_config({"architecture": name, "preset": "tiny"}), get_registry())[0]
    config = {
        "model": {"architecture": name, "preset": "tiny"},
        "tokenizer": {"tokenizer_type": "char", "vocab_size": 100, "min_frequency": 1},
        "data": {"train_files": [str(text)], "validation_files": [str(text)], "block_size": 32,
                 "cache_dir": str(tmp_path / "cache")},
        "training": {"objective": objective, "max_steps": 30, "batch_size": 8, "learning_rate": 0.01,
                     "warmup_steps": 2, "log_every": 5, "eval_every": 30, "save_every": 30,
                     "mixed_precision": precision, "output_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return train(load_config(str(path)))


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
@pytest.mark.parametrize("name", TEXT_ARCHITECTURES)
def test_foundry_train_on_cuda(name, precision, tmp_path):
    result = train_tiny(name, precision, tmp_path)
    assert next(result.model.parameters()).device.type == DEVICE
    with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as handle:
        losses = [record["loss"] for record in map(json.loads, handle) if "loss" in record]
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0], losses
    loaded = model_foundry.load(tmp_path / "run" / "final", device=DEVICE)
    for saved, trained in zip(loaded.state_dict().values(), result.model.state_dict().values(), strict=True):
        assert torch.equal(saved, trained)


def test_generate_and_eval_on_cuda_match_the_cpu(tmp_path, capsys):
    train_tiny("gpt2", "no", tmp_path)
    final = str(tmp_path / "run" / "final")
    outputs = {}
    for device in ("cpu", "cuda"):
        capsys.readouterr()
        generate = ["generate", final, "--prompt", "To be", "--max-new-tokens", "20", "--seed", "3", "--device", device]
        assert cli.main(generate) == 0
        text = capsys.readouterr().out
        assert cli.main(["eval", final, "--data", str(tmp_path / "train.txt"), "--json", "--device", device]) == 0
        outputs[device] = text, json.loads(capsys.readouterr().out)["eval_loss"]
    assert outputs["cuda"][0] == outputs["cpu"][0]  # the seeded CPU generator draws the same tokens
    assert outputs["cuda"][1] == pytest.approx(outputs["cpu"][1], rel=1e-4)


def test_sample_on_cuda_matches_the_cpu(tmp_path, capsys):
    import numpy as np

    model_foundry.save(model_foundry.create_model("gaussian_mixture", preset="tiny", num_classes=2), tmp_path / "ckpt")
    samples = {}
    for device in ("cpu", "cuda"):
        args = ["sample", str(tmp_path / "ckpt"), "--num-samples", "64", "--seed", "3", "--condition", "1"]
        assert cli.main([*args, "--device", device, "--out", str(tmp_path / device)]) == 0
        samples[device] = np.load(tmp_path / f"{device}.npy")
    np.testing.assert_allclose(samples["cuda"], samples["cpu"], rtol=1e-5, atol=1e-6)  # drawn from the seeded CPU generator
