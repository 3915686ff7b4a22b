"""The core's conformance checks, as every plugin runs them."""

from model_foundry.testing import check_architecture


def test_conformance():
    check_architecture("gaussian_mixture")
