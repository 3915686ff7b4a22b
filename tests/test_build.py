"""`foundry build`: size summaries on the meta device, memory estimates, module table, clear errors."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from torch import nn

import model_foundry
from model_foundry.cli import main
from model_foundry.commands.build import summarize

CONFIG = """
model:
  architecture: gpt2
  preset: tiny
tokenizer:
  tokenizer_type: bpe
  vocab_size: 500
"""


def write(tmp_path, text=CONFIG):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def build_json(capsys, *args):
    assert main(["build", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_meta_build_matches_a_real_model(tmp_path, capsys):
    path = write(tmp_path)
    summary = build_json(capsys, path)
    assert summary["device"] == "meta" and summary["architecture"] == "gpt2" and summary["preset"] == "tiny"
    assert (summary["vocab_size"], summary["vocab_size_source"]) == (500, "tokenizer.vocab_size")
    real = model_foundry.create_model(model_foundry.load_config(path))
    assert summary["num_parameters"] == real.num_parameters() == summary["trainable_parameters"]
    assert summary["memory"] == real.memory_footprint()
    weights = 4 * summary["num_parameters"]
    assert summary["memory"]["parameters"] == weights
    assert summary["memory"]["training_adamw"] == summary["memory"]["total"] + 3 * weights
    materialized = build_json(capsys, path, "--materialize")
    assert materialized["device"] == "cpu" and materialized["modules"] == summary["modules"]


def test_module_table_counts_tied_weights_once(tmp_path, capsys):
    rows = {row["name"]: row for row in build_json(capsys, write(tmp_path))["modules"]}
    assert rows["hf_model.transformer.wte"]["parameters"] == 500 * 64
    assert rows["hf_model.transformer.h"]["type"] == "2 x GPT2Block"
    assert rows["hf_model.lm_head"]["parameters"] == 0
    assert rows["hf_model.lm_head"]["shared"] == ["hf_model.transformer.wte"]


def test_overrides_and_large_presets_stay_on_meta(tmp_path, capsys):
    path = write(tmp_path)
    tiny = build_json(capsys, path)["num_parameters"]
    deeper = build_json(capsys, path, "--set", "model.transformer.layers=4")["num_parameters"]
    assert deeper > tiny
    large = build_json(capsys, path, "--set", "model.preset=large", "--set", "model.vocab_size=32000")
    assert (large["vocab_size"], large["vocab_size_source"]) == (32000, "model.vocab_size")
    assert 300e6 < large["num_parameters"] < 400e6  # the guide's ~350M


def test_table_for_people(tmp_path, capsys):
    assert main(["build", write(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "built on the meta device" in out and "vocab_size: 500 (from tokenizer.vocab_size)" in out
    assert "training with AdamW" in out and "tied to hf_model.transformer.wte" in out


def test_missing_vocabulary_takes_the_default_tokenizer_size(tmp_path, capsys):
    path = write(tmp_path, "model:\n  architecture: gpt2\n  preset: tiny\n")
    assert main(["build", path]) == 0
    assert "vocab_size: 8000 (from the default tokenizer's vocab_size)" in capsys.readouterr().out


def test_bad_config_is_reported_located(tmp_path, capsys):
    assert main(["build", write(tmp_path), "--set", "model.transformer.attention_heads=5"]) == 2
    assert "model.transformer.hidden_size" in capsys.readouterr().err


def test_summarize_any_module():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model.register_parameter("scale", nn.Parameter(torch.ones(5)))
    summary = summarize(model)
    assert summary["num_parameters"] == 16 + 10 + 5
    assert [row["name"] for row in summary["modules"]] == ["scale", "0", "2"]
    assert summary["memory"]["training_adamw"] == 4 * 4 * 31


@pytest.mark.parametrize("architecture", ["gpt2", "bert"])
def test_every_preset_builds_on_meta(tmp_path, capsys, architecture):
    for preset in ("tiny", "small", "base", "large"):
        summary = build_json(capsys, write(tmp_path, CONFIG.replace("gpt2", architecture).replace("tiny", preset)))
        assert summary["num_parameters"] > 0
