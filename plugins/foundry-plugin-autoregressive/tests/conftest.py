"""Fixtures of the autoregressive plugin's tests: a seeded torch, small models, every example of a tiny space."""

from __future__ import annotations

import itertools

import pytest
import torch

from model_foundry import create_model


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _build(architecture: str, modality: str | None = None, **fields):
    """A model of the ``tiny`` preset with ``fields`` changed."""
    return create_model({"architecture": architecture, "preset": "tiny", **fields}, modality=modality)


def _every_example(levels: int, shape: tuple[int, ...], values) -> torch.Tensor:
    """Every example of ``shape`` whose entries are codes 0..levels-1, as data (``values`` maps codes to it)."""
    codes = torch.tensor(list(itertools.product(range(levels), repeat=int(torch.Size(shape).numel()))))
    return values(codes.view(-1, *shape))


@pytest.fixture
def build():
    return _build


@pytest.fixture
def every_example():
    return _every_example
