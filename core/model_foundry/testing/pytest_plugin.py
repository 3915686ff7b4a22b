"""Pytest fixtures for plugin authors: ``foundry_registry`` (an isolated registry factory)."""

from __future__ import annotations

import pytest

from model_foundry.testing import isolated_registry


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
