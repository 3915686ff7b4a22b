"""The core's conformance checks, as every plugin runs them, for each architecture."""

import pytest

from model_foundry.testing import check_architecture


@pytest.mark.parametrize("architecture", ["gan", "dcgan", "wgan", "lsgan"])
def test_conformance(architecture):
    check_architecture(architecture)
