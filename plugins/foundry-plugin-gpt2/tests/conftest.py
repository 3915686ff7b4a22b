"""The GPT-2 plugin's tests build the tiny preset with the vocabulary of a small trained
bpe tokenizer (the core's ``foundry_tokenizer`` fixture)."""

import pytest

from model_foundry.config import load_model_config


@pytest.fixture
def tiny_config(foundry_tokenizer):
    vocab_size = len(foundry_tokenizer("bpe"))
    return load_model_config({"architecture": "gpt2", "preset": "tiny", "vocab_size": vocab_size})
