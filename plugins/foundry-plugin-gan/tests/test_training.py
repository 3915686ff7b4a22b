"""GANs through `foundry train`: both optimizers, evaluations with samples, sample/eval of the result,
exact resume after SIGKILL, two processes under torchrun, and data of the wrong shape."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from model_foundry import cli

REPOSITORY = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def write_config(tmp_path, architecture="gan", model=None, training=None, data=None):
    config = {
        "model": {"architecture": architecture, "preset": "tiny", **(model or {})},
        "data": {"kind": "digits", **(data or {})},
        "training": {
            "max_steps": 20, "batch_size": 16, "learning_rate": 1.0e-3, "adam_beta1": 0.5, "warmup_steps": 0,
            "log_every": 1, "eval_every": 10, "eval_samples": 16, "save_every": 10,
            "output_dir": str(tmp_path / "run"), **(training or {}),
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return str(path)


def records(run):
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_a_dcgan_trains_on_digits_writes_samples_at_each_evaluation_and_samples_and_evaluates(tmp_path, capsys):
    from model_foundry.training.state import read_training_state

    path = write_config(tmp_path, "dcgan", model={"n_critic": 2}, training={"max_steps": 10, "eval_every": 5, "save_every": 5})
    assert cli.main(["train", path]) == 0
    run = tmp_path / "run"
    logged = records(run)
    losses = [r for r in logged if "loss" in r]
    assert len(losses) == 10 and all(("generator_loss" in r) == (r["step"] % 2 == 0) for r in losses)
    evaluations = [r for r in logged if "eval_loss" in r]
    assert [r["step"] for r in evaluations] == [5, 10] and all("digits_score" in r and "digits_fid" in r for r in evaluations)
    assert all((run / "samples" / f"step-{step}" / "samples.png").is_file() for step in (5, 10))
    _, optimizers, _ = read_training_state(str(run / "checkpoint-10"))
    steps = {name: {float(entry["step"]) for entry in state["state"].values()} for name, state in optimizers.items()}
    assert steps == {"discriminator": {10.0}, "generator": {5.0}}  # every step; every n_critic-th
    capsys.readouterr()
    assert cli.main(["sample", str(run / "final"), "--num-samples", "8", "--seed", "0", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s.png").is_file() and (tmp_path / "s.npy").is_file()
    capsys.readouterr()
    assert cli.main(["eval", str(run / "final"), "--json"]) == 0
    assert {"eval_loss", "digits_score", "digits_fid"} <= set(json.loads(capsys.readouterr().out))


def test_data_of_another_shape_stops_training_with_a_clear_error_and_nothing_written(tmp_path, capsys):
    shape = "[1, 28, 28]"
    path = write_config(tmp_path)
    code = cli.main(["train", path, "--set", f"model.generator.output_shape={shape}",
                     "--set", f"model.discriminator.input_shape={shape}"])
    assert code == 2
    error = capsys.readouterr().err
    assert "built for examples of shape [1, 28, 28]" in error
    assert "have shape [1, 8, 8]; set model.generator.output_shape and model.discriminator.input_shape to [1, 8, 8]" in error
    assert "Traceback" not in error
    assert not (tmp_path / "run" / "final").exists() and not list((tmp_path / "run").glob("checkpoint-*"))


def foundry(*args):
    return [sys.executable, "-m", "model_foundry.cli", *args]


def run_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}


def losses_of(run):
    return [{k: v for k, v in r.items() if k not in ("elapsed", "samples_per_sec")} for r in records(run)]


@pytest.mark.slow  # three training processes, one killed
def test_a_wgan_killed_with_sigkill_resumes_with_exactly_the_uninterrupted_losses(tmp_path):
    """Both optimizers' moments, the gradient penalty's and the noise's RNG, the EMA: all restored bit for bit."""
    path = write_config(tmp_path, "wgan", model={"n_critic": 3}, training={
        "max_steps": 200, "eval_every": 100, "save_every": 50, "keep_checkpoints": 10,
    })
    path_with_ema = tmp_path / "ema.yaml"
    config = json.loads(open(path, encoding="utf-8").read())
    path_with_ema.write_text(json.dumps({**config, "extensions": {"ema": {"decay": 0.9}}}), encoding="utf-8")
    done = subprocess.run(foundry("train", str(path_with_ema)), env=run_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    expected = losses_of(tmp_path / "run")
    assert len(expected) == 200 + 2

    killed = str(tmp_path / "killed")
    process = subprocess.Popen(foundry("train", str(path_with_ema), "--set", f"training.output_dir={killed}"),
                               env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # a loaded machine takes minutes to start a run
    while not os.path.isdir(os.path.join(killed, "checkpoint-50")) and process.poll() is None:
        assert time.monotonic() < deadline, "the run never wrote its first checkpoint"
        time.sleep(0.002)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read()
    assert not os.path.isdir(os.path.join(killed, "final"))
    resumed = subprocess.run(foundry("train", str(path_with_ema), "--set", f"training.output_dir={killed}", "--resume"),
                             env=run_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert losses_of(killed) == expected
    for name in ("model.safetensors", "extensions.safetensors"):
        ours, theirs = load_file(os.path.join(killed, "final", name)), load_file(str(tmp_path / "run" / "final" / name))
        assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


DDP_SCRIPT = """\
import os, sys
from safetensors.torch import save_model
from model_foundry.config import load_config
from model_foundry.training import train

result = train(load_config(sys.argv[1]))
save_model(result.model, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.safetensors"))
"""


@pytest.mark.slow
def test_two_processes_under_torchrun_train_the_same_weights(tmp_path):
    path = write_config(tmp_path, "wgan", model={"n_critic": 2}, training={"max_steps": 8, "eval_every": 4, "save_every": 4})
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               path, str(tmp_path)]
    done = subprocess.run(command, env=run_env(), capture_output=True, text=True, timeout=300, cwd=REPOSITORY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys() and all((rank0[k] == rank1[k]).all() for k in rank0)
    at_step_4 = load_file(str(tmp_path / "run" / "checkpoint-4" / "model.safetensors"))
    for part in ("generator", "discriminator"):  # both players trained after step 4
        assert any((at_step_4[k] != rank0[k]).any() for k in rank0 if k.startswith(part))
    logged = [r for r in records(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in logged] == list(range(1, 9)) and all("gradient_penalty_loss" in r for r in logged)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["28x28-grey", "32x32-rgb"])
def test_a_dcgan_trains_on_larger_images_from_a_npy_file(tmp_path, shape):
    import numpy as np
    import torch

    from model_foundry.checkpoint import load

    pixels = np.random.default_rng(0).integers(0, 256, size=(40, *shape), dtype=np.uint8)
    np.save(tmp_path / "images.npy", pixels)
    layers = {"generator": {"output_shape": list(shape), "hidden_dims": [16, 8]},
              "discriminator": {"input_shape": list(shape), "hidden_dims": [8, 16]}}
    path = write_config(tmp_path, "dcgan", model=layers, data={"kind": "npy", "modality": "image", "path": str(tmp_path / "images.npy")},
                        training={"max_steps": 2, "eval_every": 2, "save_every": 0, "eval_samples": 4})
    assert cli.main(["train", path]) == 0
    assert (tmp_path / "run" / "samples" / "step-2" / "samples.png").is_file()
    model = load(str(tmp_path / "run" / "final"))
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *shape)
