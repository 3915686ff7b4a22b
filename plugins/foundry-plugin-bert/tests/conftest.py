"""Fixtures for the BERT plugin's tests: a small trained WordPiece tokenizer and the tiny preset."""

from __future__ import annotations

import pytest

from model_foundry import train_tokenizer
from model_foundry.config import load_model_config
from model_foundry.text.config import TokenizerConfig

TEXT = "the cat sat on the mat.\nthe dog ate the bone.\na bird sang in the tree.\n" * 20


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "train.txt"
    path.write_text(TEXT, encoding="utf-8")
    return train_tokenizer(TokenizerConfig(tokenizer_type="wordpiece", vocab_size=300, min_frequency=1), [path])


@pytest.fixture
def tiny_config(tokenizer):
    return load_model_config({"architecture": "bert", "preset": "tiny", "vocab_size": len(tokenizer)})
