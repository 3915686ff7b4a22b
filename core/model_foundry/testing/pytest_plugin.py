"""Pytest fixtures for plugin authors: ``foundry_registry`` (an isolated registry factory) and
``foundry_tokenizer`` (small tokenizers trained on a few lines of text, for text plugins' tests)."""

from __future__ import annotations

import pytest

from model_foundry.testing import isolated_registry


def pytest_configure(config):
    """The ``slow`` marker, known wherever the core is installed, so a plugin's tests run on their own
    (without the repository's pytest settings) mark their long tests without a warning."""
    config.addinivalue_line("markers", "slow: a test over ~10 s; -m 'not slow' skips it")


@pytest.fixture
def foundry_registry():
    """Call with plugin objects to get an isolated registry installed for the rest of the test."""
    stack = []

    def make(*plugins, builtins: bool = True):
        context = isolated_registry(*plugins, builtins=builtins)
        stack.append(context)
        return context.__enter__()

    yield make
    while stack:
        stack.pop().__exit__(None, None, None)


# A few sentences, repeated: enough for a tokenizer of a few hundred tokens.
TOKENIZER_TEXT = "the cat sat on the mat.\nthe dog ate the bone.\na bird sang in the tree.\n" * 20


@pytest.fixture(scope="session")
def foundry_tokenizer(tmp_path_factory):
    """Call with a tokenizer type (``bpe``, ``wordpiece``, ...) for a tokenizer of 300 tokens trained
    on a few lines of text; one per type per test session."""
    from model_foundry import train_tokenizer
    from model_foundry.text.config import TokenizerConfig

    trained = {}

    def make(tokenizer_type: str):
        if tokenizer_type not in trained:
            path = tmp_path_factory.mktemp("text") / "train.txt"
            path.write_text(TOKENIZER_TEXT, encoding="utf-8")
            config = TokenizerConfig(tokenizer_type=tokenizer_type, vocab_size=300, min_frequency=1)
            trained[tokenizer_type] = train_tokenizer(config, [path])
        return trained[tokenizer_type]

    return make
