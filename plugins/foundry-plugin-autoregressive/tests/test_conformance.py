"""The core's conformance checks, as every plugin runs them: each architecture, and the transformer for audio."""

import pytest

from model_foundry.testing import check_architecture


@pytest.mark.parametrize("name, preset", [("pixelcnn", "tiny"), ("wavenet", "tiny"), ("transformer", "tiny"),
                                          ("transformer", "tiny-audio")])
def test_conformance(name, preset):
    check_architecture(name, preset=preset)
