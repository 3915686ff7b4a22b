"""The modalities this plugin adds: ``voxel``, ``mesh`` and ``graph`` (``point_cloud`` is the core's).

=========  ================  ========================  ==============================================
modality   batch key         one example               samples written as
=========  ================  ========================  ==============================================
voxel      ``voxels``        (1, D, D, D) occupancy    a PNG of the occupied cells of the first few
mesh       ``surface_points`` (P, 3) points on the     one ``.obj`` per sample: (V, 3) vertices of the
                             target surface            icosphere template (V = 10*4^s + 2), its faces
graph      ``adjacency``     (n, n) 0/1, symmetric,    a PNG grid of the adjacency matrices and
                             empty diagonal; with      the graphs as JSON lines (the format of
                             ``node_mask`` (n,),       kind ``graph_file``); samples are typed:
                             optional ``node_labels``  1 + edge type off the diagonal, 1 + node
                             (n,), ``edge_labels``     label on it (labelled models only)
                             (n, n)
=========  ================  ========================  ==============================================

Every writer also saves the raw batch as ``<stem>.npy``. The collators are the modalities'
preprocessing: occupancy is binarised at 0.5, adjacency symmetrised with an empty diagonal and
padding nodes cut off, so a model always sees valid data.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from foundry_plugin_geometric.config import MAX_SUBDIVISIONS, icosphere_vertex_count
from model_foundry.plugin import MAX_CLOUDS, as_array, image_grid, new_figure, save_figure, staged, write_npy


def _batch_of(array: np.ndarray, ndim: int, layout: str, modality: str) -> None:
    if array.ndim != ndim or len(array) == 0:
        raise ValueError(f"{modality} samples must be a non-empty batch of shape {layout}, got {tuple(array.shape)}")


# --- voxel -----------------------------------------------------------------------------------


def write_voxels(samples: Any, path_stem: str, **info: Any) -> list[str]:
    """Voxel samples ``(N, 1, D, H, W)``: a PNG of the occupied cells (> 0.5) of the first few, and the ``.npy``."""
    grids = as_array(samples)
    _batch_of(grids, 5, "(N, 1, D, H, W)", "voxel")
    shown = grids[:MAX_CLOUDS, 0] > 0.5
    figure = new_figure(figsize=(4 * len(shown), 4), dpi=100)
    for index, occupied in enumerate(shown):
        axes = figure.add_subplot(1, len(shown), index + 1, projection="3d")
        axes.voxels(occupied, edgecolor="k", linewidth=0.2)
        axes.set_title(f"sample {index} ({int(occupied.sum())} cells)")
    return [save_figure(figure, f"{path_stem}.png"), write_npy(grids, path_stem)]


def collate_voxels() -> Callable[[dict], dict]:
    """The voxel collator's factory: occupancy binarised at 0.5, as float32."""

    def collate(batch: dict) -> dict:
        return {**batch, "voxels": (batch["voxels"] > 0.5).float()}

    return collate


# --- mesh ------------------------------------------------------------------------------------


def template_subdivisions(vertex_count: int) -> int:
    """The icosphere level whose template has ``vertex_count`` vertices."""
    for level in range(MAX_SUBDIVISIONS + 1):
        if icosphere_vertex_count(level) == vertex_count:
            return level
    counts = ", ".join(str(icosphere_vertex_count(level)) for level in range(MAX_SUBDIVISIONS + 1))
    raise ValueError(f"mesh samples are icosphere vertices (V = 10*4^s + 2: {counts}), got {vertex_count} vertices")


def write_meshes(samples: Any, path_stem: str, **info: Any) -> list[str]:
    """Mesh samples ``(N, V, 3)``, vertices of the icosphere template: one ``.obj`` and one ``.ply``
    (binary) per sample, a PNG
    of the first few surfaces, and the ``.npy``."""
    import trimesh

    from foundry_plugin_geometric.geometry import icosphere

    vertices = as_array(samples)
    _batch_of(vertices, 3, "(N, V, 3)", "mesh")
    _, faces = icosphere(template_subdivisions(vertices.shape[1]))
    paths = []
    for index, points in enumerate(vertices):
        mesh = trimesh.Trimesh(points, faces, process=False)
        for file_type in ("obj", "ply"):
            path = f"{path_stem}-{index:03d}.{file_type}"
            with staged(path) as staging:
                mesh.export(staging, file_type=file_type)
            paths.append(path)
    shown = vertices[:MAX_CLOUDS]
    figure = new_figure(figsize=(4 * len(shown), 4), dpi=100)
    for index, points in enumerate(shown):
        axes = figure.add_subplot(1, len(shown), index + 1, projection="3d")
        axes.plot_trisurf(points[:, 0], points[:, 1], points[:, 2], triangles=faces, linewidth=0.1, edgecolor="k")
        axes.set_title(f"sample {index}")
    return [*paths, save_figure(figure, f"{path_stem}.png"), write_npy(vertices, path_stem)]


# --- graph -----------------------------------------------------------------------------------


def sample_graphs(samples: np.ndarray) -> list[dict[str, Any]]:
    """Typed adjacency samples (N, n, n) as graph-file records (the format kind ``graph_file``
    reads): 1 + an edge's type off the diagonal (1 for an unlabelled edge), and, for a model with
    node labels, 1 + each node's label on the diagonal, which then also gives the node count;
    without labels a graph ends at its last node with an edge."""
    records = []
    for matrix in np.rint(samples).astype(np.int64):
        labels = np.diagonal(matrix)
        typed = matrix * (1 - np.eye(len(matrix), dtype=np.int64))
        touched = np.flatnonzero(typed.any(-1))
        size = int((labels > 0).sum()) if labels.any() else int(touched[-1] + 1) if len(touched) else 1
        rows, columns = np.nonzero(np.triu(typed[:size, :size], 1))
        edge_labelled = bool((typed > 1).any())
        record: dict[str, Any] = {"num_nodes": size, "edges": [
            [int(i), int(j), int(typed[i, j] - 1)] if edge_labelled else [int(i), int(j)] for i, j in zip(rows, columns, strict=True)
        ]}
        if labels.any():
            record["node_labels"] = (labels[:size] - 1).tolist()
        records.append(record)
    return records


def write_graphs(samples: Any, path_stem: str, **info: Any) -> list[str]:
    """Graph samples ``(N, n, n)``, typed adjacency matrices: a PNG grid of them (edges white), the
    graphs as JSON lines (``<stem>.jsonl``, readable as data by kind ``graph_file``) and the ``.npy``."""
    import json

    from PIL import Image

    adjacency = as_array(samples)
    _batch_of(adjacency, 3, "(N, n, n)", "graph")
    if adjacency.shape[1] != adjacency.shape[2]:
        raise ValueError(f"graph samples must be square adjacency matrices (N, n, n), got {tuple(adjacency.shape)}")
    edges = (adjacency > 0.5) & ~np.eye(adjacency.shape[1], dtype=bool)
    grid = image_grid(edges[:, None].astype(np.float32) * 2 - 1)
    path, lines = f"{path_stem}.png", f"{path_stem}.jsonl"
    with staged(path) as staging:
        Image.fromarray(grid[:, :, 0]).save(staging, format="PNG")
    with staged(lines) as staging, open(staging, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in sample_graphs(adjacency))
    return [path, lines, write_npy(adjacency, path_stem)]


def collate_graphs() -> Callable[[dict], dict]:
    """The graph collator's factory: adjacency made symmetric 0/1 with an empty diagonal, edges of
    padding nodes removed; ``node_mask`` (all nodes) added where the data has none; labels, where
    the data has them, zero on padding nodes and where there is no edge."""

    def collate(batch: dict) -> dict:
        import torch

        from foundry_plugin_geometric.geometry import symmetric_without_loops

        adjacency = symmetric_without_loops(batch["adjacency"].float())
        mask = batch.get("node_mask")
        mask = torch.ones(adjacency.shape[:2], dtype=torch.bool) if mask is None else mask.bool()
        adjacency = adjacency * (mask.unsqueeze(-1) & mask.unsqueeze(-2)).float()
        labels = {}
        if "node_labels" in batch:
            labels["node_labels"] = batch["node_labels"].long() * mask
        if "edge_labels" in batch:
            labels["edge_labels"] = batch["edge_labels"].long() * adjacency.long()
        return {**batch, "adjacency": adjacency, "node_mask": mask, **labels}

    return collate
