"""The maths the geometric models and datasets share, in plain functions that tests compare
against brute force and against trimesh, networkx and pot.

Point sets: Chamfer distance and the exact earth mover's distance. Meshes: the icosphere
template, its edges, the uniform Laplacian, edge lengths, generalised winding numbers (inside
tests for voxelisation). Graphs: degrees and clustering coefficients of adjacency matrices.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# --- point sets ------------------------------------------------------------------------------


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, P, D) and (N, Q, D) -> (N, P, Q) squared Euclidean distances (never negative)."""
    return (a.square().sum(-1, keepdim=True) + b.square().sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)).clamp_min(0)


def chamfer_distance(
    a: torch.Tensor, b: torch.Tensor, mask_a: torch.Tensor | None = None, mask_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chamfer distance of each pair of sets, (N,): the mean over ``a`` of the squared distance to
    the nearest point of ``b``, plus the same from ``b`` to ``a``. Masks (N, P) / (N, Q), true for
    real points, leave padding out of both means and out of the nearest-point search."""
    distances = squared_distances(a, b)
    if mask_b is not None:
        distances = distances.masked_fill(~mask_b.bool().unsqueeze(-2), math.inf)
    if mask_a is not None:
        distances = distances.masked_fill(~mask_a.bool().unsqueeze(-1), math.inf)
    a_to_b, b_to_a = distances.min(-1).values, distances.min(-2).values
    return _masked_mean(a_to_b, mask_a) + _masked_mean(b_to_a, mask_b)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean(-1)
    mask = mask.bool()
    return torch.where(mask, values, torch.zeros_like(values)).sum(-1) / mask.sum(-1).clamp_min(1)


def emd_matching(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For sets of equal size (N, P, 3), the index (N, P) of the point of ``b`` matched to each point
    of ``a`` by the optimal assignment of squared distances (the exact EMD's transport plan)."""
    from scipy.optimize import linear_sum_assignment

    if a.shape != b.shape:
        raise ValueError(f"the earth mover's distance here matches sets of one size, got {tuple(a.shape)} and {tuple(b.shape)}")
    costs = squared_distances(a.detach(), b.detach()).double().cpu().numpy()
    return torch.as_tensor(np.stack([linear_sum_assignment(cost)[1] for cost in costs]), device=a.device)


def earth_movers_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact EMD of each pair of equal-size sets (N,): the mean squared distance between matched
    points under the optimal one-to-one matching. Differentiable in the points (the matching is fixed)."""
    matched = torch.gather(b, 1, emd_matching(a, b).unsqueeze(-1).expand_as(b))
    return (a - matched).square().sum(-1).mean(-1)


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_variance)) || N(0, I)) summed over all but the first dimension, (N,)."""
    return 0.5 * (mean.square() + log_variance.exp() - 1 - log_variance).flatten(1).sum(-1)


# --- meshes ----------------------------------------------------------------------------------


def icosphere(subdivisions: int, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """trimesh's icosphere: vertices (V, 3) float64 and faces (F, 3) int64."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(sphere.vertices, dtype=np.float64), np.asarray(sphere.faces, dtype=np.int64)


def unique_edges(faces: np.ndarray) -> np.ndarray:
    """The undirected edges (E, 2) of a triangle mesh, each once, smaller index first."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)


def uniform_laplacian(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """``L(v)_i = v_i - mean of v_i's neighbours`` for (N, V, 3) vertices and (E, 2) edges: zero
    where a vertex is the average of its neighbours (inside a flat regular grid, on a plane)."""
    count = vertices.shape[-2]
    sums = torch.zeros_like(vertices)
    sums.index_add_(-2, edges[:, 0], vertices[..., edges[:, 1], :])
    sums.index_add_(-2, edges[:, 1], vertices[..., edges[:, 0], :])
    degree = torch.zeros(count, dtype=vertices.dtype, device=vertices.device)
    degree.index_add_(0, edges.reshape(-1), torch.ones(edges.numel(), dtype=vertices.dtype, device=vertices.device))
    return vertices - sums / degree.clamp_min(1).unsqueeze(-1)


def edge_lengths_squared(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(N, V, 3), (E, 2) -> (N, E) squared edge lengths."""
    return (vertices[..., edges[:, 0], :] - vertices[..., edges[:, 1], :]).square().sum(-1)


def winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The generalised winding number of a triangle mesh at each point (Q,): 1 inside a closed,
    outward-oriented surface, 0 outside. Each triangle adds its signed solid angle / 4 pi
    (Van Oosterom and Strackee), so no ray casting or spatial index is needed."""
    triangles = vertices[faces]  # (F, 3, 3)
    result = np.empty(len(points))
    for start in range(0, len(points), chunk):
        relative = triangles[None, :, :, :] - points[start : start + chunk, None, None, :]  # (q, F, 3, 3)
        a, b, c = relative[..., 0, :], relative[..., 1, :], relative[..., 2, :]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        numerator = np.einsum("...i,...i", a, np.cross(b, c))
        denominator = la * lb * lc + np.einsum("...i,...i", a, b) * lc + np.einsum("...i,...i", b, c) * la
        denominator += np.einsum("...i,...i", c, a) * lb
        result[start : start + chunk] = (2 * np.arctan2(numerator, denominator)).sum(-1) / (4 * np.pi)
    return result


def voxel_centres(resolution: int) -> np.ndarray:
    """Centres of a resolution^3 grid of cells covering [-1, 1]^3, (R^3, 3), in (z, y, x) index order."""
    coordinates = (np.arange(resolution) + 0.5) * (2.0 / resolution) - 1.0
    grid = np.stack(np.meshgrid(coordinates, coordinates, coordinates, indexing="ij"), axis=-1)
    return grid.reshape(-1, 3)


def voxelize(vertices: np.ndarray, faces: np.ndarray, resolution: int) -> np.ndarray:
    """Occupancy (R, R, R) float32 of a closed mesh inside [-1, 1]^3: 1 where a cell's centre lies inside."""
    inside = winding_numbers(vertices, faces, voxel_centres(resolution)) > 0.5
    return inside.reshape(resolution, resolution, resolution).astype(np.float32)


# --- graphs ----------------------------------------------------------------------------------


def symmetric_without_loops(adjacency: torch.Tensor) -> torch.Tensor:
    """(N, n, n) -> a 0/1 float adjacency: an edge where either direction is > 0.5, none on the diagonal."""
    binary = (adjacency > 0.5) | (adjacency > 0.5).transpose(-1, -2)
    eye = torch.eye(adjacency.shape[-1], dtype=torch.bool, device=adjacency.device)
    return (binary & ~eye).float()


def degrees(adjacency: np.ndarray) -> np.ndarray:
    """Node degrees (n,) of one 0/1 symmetric adjacency matrix."""
    return adjacency.sum(-1)


def clustering_coefficients(adjacency: np.ndarray) -> np.ndarray:
    """Local clustering coefficient of each node (n,): triangles through the node over the pairs of
    its neighbours, 0 for nodes of degree < 2 (networkx's convention)."""
    adjacency = np.asarray(adjacency, dtype=np.float64)
    degree = adjacency.sum(-1)
    triangles = np.diagonal(adjacency @ adjacency @ adjacency) / 2
    pairs = degree * (degree - 1) / 2
    return np.where(pairs > 0, triangles / np.maximum(pairs, 1), 0.0)
