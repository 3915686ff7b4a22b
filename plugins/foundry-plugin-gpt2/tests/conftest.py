"""Fixtures for the GPT-2 plugin's tests: a small trained BPE tokenizer (the core's pytest plugin trains it) and
the tiny preset."""

from __future__ import annotations

import pytest

from model_foundry.config import load_model_config


@pytest.fixture(scope="session")
def tokenizer(foundry_tokenizer):
    return foundry_tokenizer("bpe")


@pytest.fixture
def tiny_config(tokenizer):
    return load_model_config({"architecture": "gpt2", "preset": "tiny", "vocab_size": len(tokenizer)})
