"""Fixtures for the BERT plugin's tests: a small trained WordPiece tokenizer (the core's pytest plugin trains it) and
the tiny preset."""

from __future__ import annotations

import pytest

from model_foundry.config import load_model_config


@pytest.fixture(scope="session")
def tokenizer(foundry_tokenizer):
    return foundry_tokenizer("wordpiece")


@pytest.fixture
def tiny_config(tokenizer):
    return load_model_config({"architecture": "bert", "preset": "tiny", "vocab_size": len(tokenizer)})
