"""Every installed architecture on a CUDA device: the conformance checks that run a model run there,
and seeded sampling gives the same tokens on any device. Skipped where no CUDA device is present
(CI has none); plugins keep their own device tests (e.g. the Performer's ``tests/test_cuda.py``)."""

from __future__ import annotations

import pytest
import torch

import model_foundry
from model_foundry.modeling import sample_next_token
from model_foundry.testing.conformance import check_generation, check_save_load, check_training_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ARCHITECTURES = sorted(a["name"] for a in model_foundry.list_architectures())


@pytest.mark.parametrize("check", [check_training_step, check_save_load, check_generation], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_conformance_on_cuda(name, check):
    check(name, device="cuda")


def test_a_seeded_cpu_generator_samples_the_same_tokens_on_cuda():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    options = {"do_sample": True, "top_k": 20, "top_p": 0.9}
    on_cpu = sample_next_token(logits, generator=torch.Generator().manual_seed(0), **options)
    on_gpu = sample_next_token(logits.cuda(), generator=torch.Generator().manual_seed(0), **options)
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)
