"""The BERT plugin's tests build the tiny preset with the vocabulary of a small trained
wordpiece tokenizer (the core's ``foundry_tokenizer`` fixture)."""

import pytest

from model_foundry.config import load_model_config


@pytest.fixture
def tiny_config(foundry_tokenizer):
    vocab_size = len(foundry_tokenizer("wordpiece"))
    return load_model_config({"architecture": "bert", "preset": "tiny", "vocab_size": vocab_size})
