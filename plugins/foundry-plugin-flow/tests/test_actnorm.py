"""Actnorm's data-dependent initialisation, on one process and on several."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from foundry_plugin_flow.model import ActNorm


def test_actnorm_starts_by_normalising_its_first_training_batch():
    x = torch.randn(64, 3, 4, 4) * torch.tensor([0.5, 2.0, 3.0]).view(1, 3, 1, 1) + 1.5
    layer = ActNorm(3).train()
    y, _ = layer(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert bool(layer.initialized)
    again, _ = layer(x * 5)  # only the first batch initialises
    torch.testing.assert_close(again, (x * 5 + layer.bias) * layer.log_scale.exp())


def _initialise_on(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        layer = ActNorm(2).train()
        torch.manual_seed(rank)
        layer(torch.randn(8, 2, 2, 2) + 10 * rank)  # each process sees other data
        results[rank] = (layer.bias.detach().clone(), layer.log_scale.detach().clone())
    finally:
        dist.destroy_process_group()


def test_replicas_of_a_distributed_run_start_from_the_moments_of_all_their_batches():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        # forked, the processes need not import torch again
        mp.start_processes(_initialise_on, args=(port, results), nprocs=2, start_method="fork")
        (bias0, scale0), (bias1, scale1) = results[0], results[1]
    torch.testing.assert_close(bias0, bias1, rtol=0, atol=0)
    torch.testing.assert_close(scale0, scale1, rtol=0, atol=0)
    both = torch.cat([torch.randn(8, 2, 2, 2, generator=torch.Generator().manual_seed(0)),
                      torch.randn(8, 2, 2, 2, generator=torch.Generator().manual_seed(1)) + 10])
    torch.testing.assert_close(-bias0.flatten(), both.mean(dim=(0, 2, 3)), atol=1e-5, rtol=0)
