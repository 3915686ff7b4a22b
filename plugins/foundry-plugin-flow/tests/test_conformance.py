"""The core's conformance checks: all of them on the tiny RealNVP, the model checks on the other flow types."""

import pytest

from model_foundry.testing import check_architecture
from model_foundry.testing.conformance import (
    check_latent,
    check_log_prob,
    check_sampling,
    check_save_load,
    check_training_step,
)


def test_conformance():
    check_architecture("flow")


@pytest.mark.parametrize("preset", ["tiny_glow", "tiny_maf", "tiny_nsf"])
@pytest.mark.parametrize("check", [check_training_step, check_save_load, check_sampling, check_log_prob, check_latent])
def test_model_checks_of_every_flow_type(check, preset):
    check("flow", preset=preset)
