"""Malformed GPT-2 configs through `foundry validate`: exit 2, FILE:LINE:COL, key path, suggestion, no traceback."""

from __future__ import annotations

import textwrap

import pytest

from model_foundry.testing import check_config_error, foundry_validate

GOOD = """\
model:
  architecture: gpt2
  preset: tiny
  transformer:
    layers: 2
    hidden_size: 64
    attention_heads: 4
    activation_function: gelu
tokenizer:
  tokenizer_type: bpe
  vocab_size: 500
training:
  objective: causal_lm
"""

CASES = {
    "heads do not divide hidden": (
        ("attention_heads: 4", "attention_heads: 6"), ":6:18: model.transformer.hidden_size:", "divisible by attention_heads"),
    "misspelled key": (("    layers: 2", "    layer: 2"), ":5:5: model.transformer.layer:", "did you mean 'layers'?"),
    "unknown activation": (
        ("activation_function: gelu", "activation_function: gelu2"), ":8:26: model.transformer.activation_function:",
        "did you mean 'gelu'?"),
    "embedding size without projection": (
        ("    layers: 2", "    layers: 2\n    embedding_size: 32"), ":6:21: model.transformer.embedding_size:",
        "set embedding_size to 64"),
    "dropout out of range": (("    layers: 2", "    layers: 2\n    dropout: 1.5"), ":6:14: model.transformer.dropout:",
                             "must be in [0, 1)"),
    "unknown preset": (("preset: tiny", "preset: smal"), ":3:11: model.preset:", "did you mean 'small'?"),
    "wrong objective": (("objective: causal_lm", "objective: masked_lm"), ":13:14: training.objective:",
                        "gpt2 cannot train 'masked_lm'"),
}


def test_good_config_validates(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    result = foundry_validate(tmp_path / "good.yaml")
    assert result.returncode == 0, result.stderr
    assert "model: gpt2 (preset tiny)" in result.stdout


@pytest.mark.parametrize("case", CASES)
def test_malformed_config(tmp_path, case):
    (old, new), where, message = CASES[case]
    assert old in GOOD
    check_config_error(GOOD.replace(old, new, 1), where, message, tmp_path)


def test_every_problem_reported_at_once(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        model:
          architecture: gpt2
          transformer:
            layers: 0
            hidden_sise: 64
            attention_dropout: -0.1
        """), encoding="utf-8")
    result = foundry_validate(path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for expected in (":4:13: model.transformer.layers: must be > 0", ":5:5: model.transformer.hidden_sise: unknown key",
                     "did you mean 'hidden_size'?", ":6:24: model.transformer.attention_dropout: must be in [0, 1)",
                     "3 problems found."):
        assert expected in result.stderr, result.stderr
