"""`foundry train`, `generate` and `eval`: real (tiny) runs, exact resume, DDP, user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Optional

import attrs
import pytest

from model_foundry import cli
from model_foundry.config import load_config
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.fields import option, positive, probability
from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder, TrainingStep
from model_foundry.testing import isolated_registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = [
    "Now is the winter of our discontent made glorious summer by this sun of York.",
    "To be, or not to be, that is the question.",
    "All the world's a stage, and all the men and women merely players.",
    "The quality of mercy is not strained; it droppeth as the gentle rain from heaven.",
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him.",
]


# --- a tiny architecture registered directly ---------------------------------------------------


@attrs.frozen
class TinyConfig:
    """A bigram-ish model: embedding, dropout, output layer."""

    vocab_size: Optional[int] = option(None, doc="vocabulary size")
    width: int = option(16, doc="embedding width", validator=positive)
    dropout: float = option(0.1, doc="dropout", validator=probability)
    max_length: int = option(64, doc="longest sequence", validator=positive)
    ctrl_c_at_step: Optional[int] = option(None, doc="send this process SIGINT after this optimizer step (tests)")


def build_tiny(model_config):
    from torch import nn

    from model_foundry.text.modeling import LanguageModel, ModelOutput, causal_lm_loss

    class Tiny(LanguageModel):
        @property
        def supports_generation(self):
            return True

        def __init__(self, config):
            super().__init__(config)
            if config.vocab_size is None:
                raise FoundryError("set model.vocab_size or a tokenizer")
            self.embed = nn.Embedding(config.vocab_size, config.width)
            self.norm = nn.LayerNorm(config.width)
            self.drop = nn.Dropout(config.dropout)
            self.head = nn.Linear(config.width, config.vocab_size)
            self.optimizer_steps: list[int] = []

        @property
        def max_sequence_length(self):
            return self.config.max_length

        def forward(self, input_ids, attention_mask=None, labels=None, **_):
            logits = self.head(self.drop(self.norm(self.embed(input_ids))))
            return ModelOutput(loss=causal_lm_loss(logits, labels) if labels is not None else None, logits=logits)

        def get_input_embeddings(self):
            return self.embed

        def on_optimizer_step(self, step):
            self.optimizer_steps.append(step)
            if step == self.config.ctrl_c_at_step:
                os.kill(os.getpid(), signal.SIGINT)

    return Tiny(model_config)


class TinyPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        return [ArchitectureSchema("tiny-lm", TinyConfig, capabilities=Capabilities(("causal_lm",), True))]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("tiny-lm", build_tiny)]


CUSTOM_STEP_CALLS: list[tuple[int, int]] = []  # (context.step, micro-batches) of each call of custom_step


def custom_step(model, batches, context):
    """One backward over all the micro-batches at once: proves the loop hands the step over."""
    CUSTOM_STEP_CALLS.append((context.step, len(batches)))
    loss = sum(model(**batch).loss for batch in batches) / len(batches)
    context.backward(loss)
    context.step_optimizer("model")
    return {"loss": loss.detach()}


class CustomStepPlugin:
    @hookimpl
    def foundry_training_steps(self):
        return [TrainingStep("tiny-lm", custom_step)]


@pytest.fixture
def tiny_registry():
    with isolated_registry(TinyPlugin()) as registry:
        yield registry


def write_text(path, lines=TEXT, repeat=8):
    path.write_text("\n".join(lines * repeat) + "\n", encoding="utf-8")
    return str(path)


def write_config(tmp_path, architecture="tiny-lm", model=None, data=None, training=None, tokenizer_type="char"):
    """A config file (JSON is YAML) training on small text files in ``tmp_path``."""
    config = {
        "model": {"architecture": architecture, **(model or {})},
        "tokenizer": {"tokenizer_type": tokenizer_type, "vocab_size": 400, "min_frequency": 1},
        "data": {
            "train_files": [write_text(tmp_path / "train.txt")],
            "validation_files": [write_text(tmp_path / "valid.txt", repeat=2)],
            "block_size": 16,
            "cache_dir": str(tmp_path / "cache"),
            **(data or {}),
        },
        "training": {
            "max_steps": 40, "batch_size": 4, "learning_rate": 0.02, "warmup_steps": 2, "log_every": 5,
            "eval_every": 20, "save_every": 20, "output_dir": str(tmp_path / "run"), **(training or {}),
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return str(path)


def records(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def losses_of(output_dir):
    return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in records(output_dir)]


# --- in-process runs ---------------------------------------------------------------------------


def test_a_short_run_learns_and_writes_every_output(tmp_path, tiny_registry, capsys):
    from model_foundry import load
    from model_foundry.training import train

    config_path = write_config(tmp_path)
    result = train(load_config(config_path))
    run = tmp_path / "run"
    logged = records(run)
    losses = [r["loss"] for r in logged if "loss" in r]
    evals = [r for r in logged if "eval_loss" in r]
    assert losses[-1] < losses[0] - 0.5
    assert [r["step"] for r in evals] == [20, 40] and evals[1]["eval_loss"] < evals[0]["eval_loss"]
    assert all(set(r) >= {"step", "loss", "lr", "tokens_per_sec", "elapsed"} for r in logged if "loss" in r)
    assert abs(evals[1]["perplexity"] - 2.718281828 ** evals[1]["eval_loss"]) < 1e-6 * evals[1]["perplexity"]
    assert sorted(os.listdir(run)) == ["checkpoint-20", "checkpoint-40", "final", "loss_curve.png", "metrics.jsonl"]
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.model.optimizer_steps == list(range(1, 41))
    assert result.model.embed.num_embeddings == len(result.tokenizer)
    final = load(str(run / "final"))
    assert all((a == b.cpu()).all() for a, b in zip(final.state_dict().values(), result.model.state_dict().values(), strict=True))
    for name in ("tokenizer.json", "training_state.json", "training_state.safetensors", "config.yaml"):
        assert (run / "checkpoint-40" / name).is_file()
    assert not (run / "final" / "training_state.json").exists()
    assert "step 40 | loss" in capsys.readouterr().out  # plain log lines when not on a terminal


def test_keep_checkpoints_and_a_fresh_run_replaces_old_outputs(tmp_path, tiny_registry, capsys):
    from model_foundry.training import train

    config_path = write_config(tmp_path, training={"save_every": 10, "keep_checkpoints": 2})
    train(load_config(config_path))
    assert sorted(p for p in os.listdir(tmp_path / "run") if p.startswith("checkpoint")) == ["checkpoint-30", "checkpoint-40"]
    train(load_config(config_path, ["training.max_steps=10", "training.warmup_steps=1"]), overwrite=True)
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-10", "final", "loss_curve.png", "metrics.jsonl"]
    assert max(r["step"] for r in records(tmp_path / "run")) == 10


def test_resume_in_process_matches_an_uninterrupted_run(tmp_path, tiny_registry, capsys):
    """A run that lost its last checkpoint resumes from step 20: same losses, same final weights."""
    import shutil

    from model_foundry.training import train

    config = load_config(write_config(tmp_path), ["training.log_every=1"])
    full = train(config)
    expected = losses_of(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoint-40")
    shutil.rmtree(tmp_path / "run" / "final")
    (tmp_path / "run" / ".checkpoint-40.tmp-killed").mkdir()  # a write cut short by SIGKILL
    resumed = train(config, resume=True)
    assert resumed.step == 40 and losses_of(tmp_path / "run") == expected
    assert not (tmp_path / "run" / ".checkpoint-40.tmp-killed").exists()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert (a == b).all()


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes_exactly(tmp_path, tiny_registry, capsys):
    config_path = write_config(tmp_path, training={"log_every": 1})
    assert cli.main(["train", config_path]) == 0
    expected = losses_of(tmp_path / "run")
    assert cli.main(["train", config_path, "--set", "model.ctrl_c_at_step=13", "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert "interrupted at step 13; checkpoint saved to" in err and "--resume" in err
    assert sorted(p for p in os.listdir(tmp_path / "run") if p.startswith("checkpoint")) == ["checkpoint-13"]
    assert losses_of(tmp_path / "run") == expected[:13]
    assert cli.main(["train", config_path, "--resume"]) == 0
    assert losses_of(tmp_path / "run") == expected


def test_gradient_accumulation_and_custom_steps(tmp_path, capsys):
    from model_foundry.training import train
    from model_foundry.training.state import read_training_state

    CUSTOM_STEP_CALLS.clear()
    with isolated_registry(TinyPlugin(), CustomStepPlugin()):
        result = train(load_config(write_config(tmp_path), ["training.max_steps=6", "training.eval_every=0",
                                                            "training.gradient_accumulation_steps=2"]))
        assert result.step == 6 and result.model.optimizer_steps == list(range(1, 7))
        assert CUSTOM_STEP_CALLS == [(step, 2) for step in range(1, 7)]  # once per optimizer step, all its micro-batches
        losses = [r["loss"] for r in records(tmp_path / "run")]
        assert losses and all(loss == loss for loss in losses)
    with isolated_registry(TinyPlugin()):
        train(load_config(write_config(tmp_path), ["training.max_steps=4", "training.gradient_accumulation_steps=3",
                                                   "training.eval_every=0", "training.log_every=1",
                                                   "training.save_every=4"]), overwrite=True)
        assert len(records(tmp_path / "run")) == 4
    _, optimizers, _ = read_training_state(str(tmp_path / "run" / "checkpoint-4"))
    assert {float(entry["step"]) for entry in optimizers["model"]["state"].values()} == {4.0}  # not one per micro-batch


def test_block_size_over_the_model_limit_is_located(tmp_path, tiny_registry):
    from model_foundry.training import train

    config_path = write_config(tmp_path, model={"max_length": 8})
    with pytest.raises(ConfigError) as caught:
        train(load_config(config_path))
    message = str(caught.value)
    assert f"{config_path}:" in message and "data.block_size: 16 is longer than the model's max_sequence_length (8)" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_a_missing_or_empty_data_file_exits_2_and_writes_nothing(tmp_path, tiny_registry, capsys, problem):
    config_path = write_config(tmp_path)
    if problem == "missing":
        os.remove(tmp_path / "train.txt")
    else:
        (tmp_path / "train.txt").write_text("")
    assert cli.main(["train", config_path]) == 2
    err = capsys.readouterr().err
    # Located at the entry in the file (write_config writes indented JSON: the first file is on line 12).
    assert f"{config_path}:12:7: data.train_files[0]:" in err
    assert ("not found" if problem == "missing" else "is empty") in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, tiny_registry, capsys):
    assert cli.main(["train", write_config(tmp_path), "--resume"]) == 2
    assert "nothing to resume: no training checkpoint" in capsys.readouterr().err


def test_generate_and_eval_commands(tmp_path, tiny_registry, capsys):
    config_path = write_config(tmp_path)
    assert cli.main(["train", config_path]) == 0
    assert "model saved to" in capsys.readouterr().out
    final = str(tmp_path / "run" / "final")
    args = ["generate", final, "--prompt", "To be", "--max-new-tokens", "12", "--seed", "3", "--top-k", "5"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("To be") and len(first.strip()) > len("To be")
    assert cli.main(args) == 0 and capsys.readouterr().out == first  # seeded
    assert cli.main([*args, "--device", "cpu"]) == 0 and capsys.readouterr().out == first
    assert cli.main([*args, "--device", "gpu"]) == 2
    assert "--device 'gpu' is not a device; use one of cpu, cuda, mps, xpu" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert cli.main(["eval", final, "--data", str(tmp_path / "valid.txt"), "--device", "cuda"]) == 2
        assert "this machine has no cuda device; use --device cpu" in capsys.readouterr().err
    assert cli.main(["generate", final, "--prompt", "x", "--max-new-tokens", "100"]) == 2
    assert "max_sequence_length (64)" in capsys.readouterr().err
    assert cli.main(["eval", final, "--data", str(tmp_path / "valid.txt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["perplexity"] < 200 and report["blocks"] > 0
    assert cli.main(["eval", final, "--data", str(tmp_path / "absent.txt")]) == 2


def test_generate_refuses_a_model_that_cannot_generate(tmp_path, capsys):
    config_path = write_config(tmp_path, architecture="bert", model={"preset": "tiny"}, tokenizer_type="wordpiece",
                               training={"objective": "masked_lm", "max_steps": 10, "eval_every": 10})
    assert cli.main(["train", config_path]) == 0
    logged = records(tmp_path / "run")
    assert [r["step"] for r in logged if "eval_loss" in r] == [10]
    assert cli.main(["generate", str(tmp_path / "run" / "final"), "--prompt", "To be"]) == 2
    assert "cannot generate text" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "run" / "final"), "--data", str(tmp_path / "valid.txt")]) == 0
    assert "perplexity" in capsys.readouterr().out


def test_the_parts_of_a_combined_loss_are_logged(tmp_path, capsys):
    config_path = write_config(tmp_path, architecture="hybrid", model={"preset": "tiny"},
                               training={"objective": "hybrid", "max_steps": 10, "eval_every": 10})
    assert cli.main(["train", config_path]) == 0
    logged = [r for r in records(tmp_path / "run") if "loss" in r]
    assert logged and all({"clm_loss", "mlm_loss"} <= set(r) for r in logged)
    first = logged[0]
    assert first["loss"] == pytest.approx(0.5 * first["clm_loss"] + 0.5 * first["mlm_loss"], rel=1e-5)
    assert "| clm_loss " in capsys.readouterr().out


# --- separate processes: SIGKILL / Ctrl-C and resume, DDP ---------------------------------------

GPT2 = {
    "preset": "tiny",
    "transformer": {"layers": 1, "hidden_size": 32, "attention_heads": 2, "intermediate_hidden_size": 64,
                    "dropout": 0.1, "attention_dropout": 0.1},
}


def foundry(*args):
    return [sys.executable, "-m", "model_foundry.cli", *args]


def run_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_with_exactly_the_uninterrupted_losses(tmp_path):
    config_path = write_config(tmp_path, architecture="gpt2", model=GPT2, tokenizer_type="bpe",
                               training={"max_steps": 300, "log_every": 1, "eval_every": 50, "save_every": 25,
                                         "gradient_accumulation_steps": 2})
    done = subprocess.run(foundry("train", config_path), env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = losses_of(tmp_path / "run")
    assert len(expected) == 300 + 6

    killed = str(tmp_path / "killed")
    process = subprocess.Popen(foundry("train", config_path, "--set", f"training.output_dir={killed}"),
                               env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not os.path.isdir(os.path.join(killed, "checkpoint-25")) and process.poll() is None:
        assert time.monotonic() < deadline, "the run never wrote its first checkpoint"
        time.sleep(0.005)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read()
    resumed = subprocess.run(foundry("train", config_path, "--set", f"training.output_dir={killed}", "--resume"),
                             env=run_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert losses_of(killed) == expected


DDP_SCRIPT = """\
import os, sys
from safetensors.torch import save_model
from model_foundry.config import load_config
from model_foundry.training import train

result = train(load_config(sys.argv[1]))
rank = int(os.environ["RANK"])
save_model(result.model, os.path.join(sys.argv[2], f"rank{rank}.safetensors"))
"""


@pytest.mark.slow
def test_two_process_ddp_ends_with_equal_weights(tmp_path):
    from safetensors.torch import load_file

    config_path = write_config(tmp_path, architecture="gpt2", model=GPT2, tokenizer_type="bpe",
                               training={"max_steps": 12, "eval_every": 6, "save_every": 6})
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               config_path, str(tmp_path)]
    # Two CPU processes over gloo; hidden GPUs, or a one-GPU machine would give both ranks the same device.
    done = subprocess.run(command, env={**run_env(), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    assert all((rank0[k] == rank1[k]).all() for k in rank0)
    initial = load_file(str(tmp_path / "run" / "checkpoint-6" / "model.safetensors"))
    assert any((initial[k] != rank0[k]).any() for k in initial)  # it did train after step 6
    logged = records(tmp_path / "run")
    assert [r["step"] for r in logged if "loss" in r] == [5, 10, 12]
    assert "2 process(es)" in done.stdout


def test_bf16_and_missing_trackers_still_train(tmp_path, tiny_registry, capsys):
    from model_foundry.training import train

    result = train(load_config(write_config(tmp_path), [
        "training.max_steps=4", "training.eval_every=2", "training.mixed_precision=bf16", "training.report_to=[no-such-tracker]",
    ]))
    assert result.step == 4 and all(r["loss"] == r["loss"] for r in records(tmp_path / "run") if "loss" in r)
    assert "warning: training.report_to: no-such-tracker not installed; skipped" in capsys.readouterr().err
