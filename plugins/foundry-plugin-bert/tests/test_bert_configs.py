"""Malformed BERT configs through `foundry validate`: exit 2, FILE:LINE:COL, key path, suggestion, no traceback."""

from __future__ import annotations

import pytest

from model_foundry.testing import check_config_error, foundry_validate

GOOD = """\
model:
  architecture: bert
  preset: tiny
  transformer:
    hidden_size: 64
    attention_heads: 4
  bert:
    type_vocab_size: 2
    pooler_type: first
tokenizer:
  tokenizer_type: wordpiece
training:
  objective: masked_lm
"""

CASES = {
    "causal objective": (("objective: masked_lm", "objective: causal_lm"), ":13:14: training.objective:",
                         "bert cannot train 'causal_lm'; it supports: masked_lm"),
    "unknown pooler": (("pooler_type: first", "pooler_type: frist"), ":9:18: model.bert.pooler_type:",
                       "did you mean 'first'?"),
    "no segment embeddings": (("type_vocab_size: 2", "type_vocab_size: 0"), ":8:22: model.bert.type_vocab_size:",
                              "must be > 0"),
    "misspelled block": (("  bert:", "  brt:"), ":7:3: model.brt:", "did you mean 'bert'?"),
    "heads do not divide hidden": (("attention_heads: 4", "attention_heads: 5"), ":5:18: model.transformer.hidden_size:",
                                   "divisible by attention_heads (5)"),
    "embedding size without projection": (
        ("    hidden_size: 64", "    hidden_size: 64\n    embedding_size: 128"), ":6:21: model.transformer.embedding_size:",
        "embedding_size must equal hidden_size (64)"),
    "activation of another library": (
        ("    attention_heads: 4", "    attention_heads: 4\n    activation_function: GELU"),
        ":7:26: model.transformer.activation_function:", "did you mean 'gelu'?"),
}


def test_good_config_validates(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    result = foundry_validate(tmp_path / "good.yaml")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", CASES)
def test_malformed_config(tmp_path, case):
    (old, new), where, message = CASES[case]
    assert old in GOOD
    check_config_error(GOOD.replace(old, new, 1), where, message, tmp_path)
