"""The core's conformance checks, for each VAE architecture."""

import pytest

from model_foundry.testing import check_architecture


@pytest.mark.parametrize("architecture", ["vae", "beta_vae", "conditional_vae", "vq_vae"])
def test_conformance(architecture):
    check_architecture(architecture)
