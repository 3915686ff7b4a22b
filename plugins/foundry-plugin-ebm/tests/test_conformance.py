"""The core's conformance checks, for both architectures."""

import pytest

from model_foundry.testing import check_architecture


@pytest.mark.parametrize("architecture", ["ebm", "deep_ebm"])
def test_conformance(architecture):
    check_architecture(architecture)
