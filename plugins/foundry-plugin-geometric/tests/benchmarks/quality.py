"""Quality runs of the geometric plugin, for ``tests/benchmarks/generative_quality.py``.

Each run trains ``configs/<architecture>.yaml`` and measures on the run's own validation split:

- point_cloud, voxel: MMD, coverage and 1-NNA of as many samples as held-out shapes (``foundry
  eval``; Chamfer for points, 1 - IoU for voxels), beside the same scores of an equal number of
  *training* shapes against the held-out ones (what a perfect sampler reaches);
- mesh: the mean Chamfer distance from the decoded posterior mean of each held-out target to
  its surface points, beside the icosphere template's own distance to them;
- graph, graph_rnn: degree and clustering MMD of samples against held-out graphs, beside Erdős–Rényi graphs
  of the same sizes and density (``foundry eval``).
"""

from __future__ import annotations

from typing import Any

import torch

FAMILY = "Geometric"


def training_shapes_scores(data: Any, key: str) -> dict[str, float]:
    """MMD, coverage and 1-NNA of training shapes, as many as held-out ones, against the held-out shapes."""
    from foundry_plugin_geometric.metrics import chamfer_matrix, iou_distance_matrix, pointflow_scores

    references = data.validation.batch(range(len(data.validation)))[key].float()
    stand_ins = data.train.batch(range(len(references)))[key].float()
    distance = iou_distance_matrix if key == "voxels" else chamfer_matrix
    return pointflow_scores(distance(stand_ins, references), distance(stand_ins, stand_ins), distance(references, references))


def _shape_run(bench: Any, architecture: str, key: str, suffix: str) -> dict[str, Any]:
    run = bench.train(f"configs/{architecture}.yaml")
    metrics = bench.evaluate(run)
    _, data = bench.load(run.checkpoint)
    ideal = training_shapes_scores(data, key)
    return {
        "parameters": run.parameters, "CPU minutes": round(run.cpu_minutes, 1),
        f"MMD ({suffix})": f"{metrics[f'mmd_{suffix}']:.4f} (training shapes {ideal['mmd']:.4f})",
        "coverage": f"{metrics[f'coverage_{suffix}']:.2f} (training shapes {ideal['coverage']:.2f})",
        "1-NNA (0.5 best)": f"{metrics[f'1nna_{suffix}']:.2f} (training shapes {ideal['1nna']:.2f})",
        "samples": bench.sample_picture(run, architecture, num_samples=4),
    }


def measure_point_cloud(bench: Any) -> dict[str, Any]:
    return _shape_run(bench, "point_cloud", "points", "chamfer")


def measure_voxel(bench: Any) -> dict[str, Any]:
    return _shape_run(bench, "voxel", "voxels", "iou")


def mesh_reconstruction(model: Any, targets: torch.Tensor) -> tuple[float, float]:
    """Mean Chamfer distance of the decoded posterior means, and of the template, to ``targets``."""
    from foundry_plugin_geometric.geometry import chamfer_distance

    with torch.no_grad():
        vertices = model.deform(model.offsets(model.encode(targets)))
        template = model.template.expand(len(targets), -1, -1)
        return chamfer_distance(vertices, targets).mean().item(), chamfer_distance(template, targets).mean().item()


def measure_mesh(bench: Any) -> dict[str, Any]:
    run = bench.train("configs/mesh.yaml")
    opened, data = bench.load(run.checkpoint)
    model = opened.model
    targets = data.validation.batch(range(len(data.validation)))["surface_points"].float()
    reconstructed, template = mesh_reconstruction(model, targets)
    return {
        "parameters": run.parameters, "CPU minutes": round(run.cpu_minutes, 1),
        "Chamfer to held-out targets": f"{reconstructed:.4f} (template {template:.4f})",
        "samples": bench.sample_picture(run, "mesh", num_samples=4),
    }


def _graph_run(bench: Any, architecture: str) -> dict[str, Any]:
    run = bench.train(f"configs/{architecture}.yaml")
    metrics = bench.evaluate(run)
    return {
        "parameters": run.parameters, "CPU minutes": round(run.cpu_minutes, 1),
        "degree MMD": f"{metrics['degree_mmd']:.4f} (Erdős–Rényi {metrics['degree_mmd_er']:.4f})",
        "clustering MMD": f"{metrics['clustering_mmd']:.4f} (Erdős–Rényi {metrics['clustering_mmd_er']:.4f})",
        "samples": bench.sample_picture(run, architecture, num_samples=16),
    }


def measure_graph(bench: Any) -> dict[str, Any]:
    return _graph_run(bench, "graph")


def measure_graph_rnn(bench: Any) -> dict[str, Any]:
    return _graph_run(bench, "graph_rnn")


RUNS = {"point_cloud": measure_point_cloud, "voxel": measure_voxel, "mesh": measure_mesh, "graph": measure_graph,
        "graph_rnn": measure_graph_rnn}
