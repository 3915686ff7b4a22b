"""The core's conformance kit for each architecture of the plugin."""

import pytest

from model_foundry.testing import check_architecture


@pytest.mark.parametrize("architecture", ["point_cloud", "voxel", "mesh", "graph", "graph_rnn"])
def test_conformance(architecture):
    check_architecture(architecture)
