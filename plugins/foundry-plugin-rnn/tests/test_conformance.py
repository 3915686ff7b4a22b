"""The core's conformance checks, for each recurrent architecture."""

import pytest

from model_foundry.testing import check_architecture


@pytest.mark.parametrize("architecture", ["lstm", "gru", "rnn"])
def test_conformance(architecture: str) -> None:
    check_architecture(architecture)
