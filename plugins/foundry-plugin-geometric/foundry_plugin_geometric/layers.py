"""Pieces two or more geometric models share: the PointNet set encoder, the Gaussian latent and
the checks of what a batch or a sampling call holds."""

from __future__ import annotations

import torch
from torch import nn

from model_foundry.plugin import MLP, FoundryError


class PointNetEncoder(nn.Module):
    """A permutation-invariant set encoder (PointNet): the same MLP on every point, a max over the
    points (padding excluded by ``mask``), then a linear map to ``out_features``."""

    def __init__(self, widths: tuple[int, ...], out_features: int):
        super().__init__()
        self.per_point = MLP(3, tuple(widths[:-1]), widths[-1])
        self.head = nn.Linear(widths[-1], out_features)

    def forward(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        features = torch.relu(self.per_point(points))
        if mask is not None:
            features = features.masked_fill(~mask.bool().unsqueeze(-1), -torch.inf)
        return self.head(features.max(-2).values)


def reparameterize(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """A draw of z ~ N(mean, exp(log_variance)) from torch's global generator (training only)."""
    return mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)


def prior_draw(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, I) draws of ``shape`` from ``generator`` where it lives, moved to ``device``."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)


def refuse_conditions(architecture: str, conditions: torch.Tensor | None) -> None:
    if conditions is not None:
        raise FoundryError(f"this {architecture} is unconditional; sample without conditions (--condition)")


def graph_batch(
    architecture: str, adjacency: torch.Tensor | None, node_mask: torch.Tensor | None, max_nodes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``adjacency`` checked to be (N, n, n) with n <= ``max_nodes`` and no empty graph: as float
    (N, max_nodes, max_nodes) with the node mask (N, max_nodes), smaller graphs padded."""
    import torch.nn.functional as F

    if adjacency is None:
        raise FoundryError(f"{architecture} needs a batch with 'adjacency' (N, n, n)")
    if adjacency.dim() != 3 or adjacency.shape[1] != adjacency.shape[2]:
        raise FoundryError(f"{architecture} takes 'adjacency' of shape (N, n, n), got {list(adjacency.shape)}")
    size = adjacency.shape[1]
    if size > max_nodes:
        raise FoundryError(
            f"the batch's graphs have up to {size} nodes and the model holds {max_nodes} (model.max_nodes); "
            f"set model.max_nodes to at least {size}"
        )
    mask = torch.ones(adjacency.shape[:2], dtype=torch.bool, device=adjacency.device) if node_mask is None else node_mask.bool()
    if not bool(mask.any(-1).all()):
        raise FoundryError("the batch holds an empty graph (a node_mask row without nodes); every graph needs nodes")
    padding = max_nodes - size
    return F.pad(adjacency.float(), (0, padding, 0, padding)), F.pad(mask, (0, padding))


def point_batch(architecture: str, key: str, points: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
    """``points`` checked to be (N, P, 3) with a matching (N, P) mask, as float32."""
    if points is None:
        raise FoundryError(f"{architecture} needs a batch with {key!r} (N, P, 3)")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise FoundryError(f"{architecture} takes {key!r} of shape (N, P, 3), got {list(points.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(points.shape[:2]):
        raise FoundryError(f"point_mask has shape {list(mask.shape)}; it must be (N, P) = {list(points.shape[:2])}")
    return points.float()
