"""Sample quality of geometric models against held-out data, run at evaluation and by ``foundry eval``.

Shapes (point clouds, meshes, voxel grids), the PointFlow protocol: with d a distance between
two shapes (Chamfer for point sets and mesh vertices against surface points; 1 - IoU for
occupancy grids), samples S and held-out references R of equal number,

- ``mmd_<d>`` (minimum matching distance): mean over R of the distance to the nearest sample;
- ``coverage_<d>``: the fraction of R that is the nearest reference of at least one sample;
- ``1nna_<d>``: the leave-one-out accuracy of the 1-nearest-neighbour classifier telling S from R
  in S + R; 0.5 when samples are indistinguishable from held-out shapes, 1 when apart.

Graphs: the maximum mean discrepancy, with a Gaussian kernel of the total variation between
normalised histograms (as in GraphRNN), of the degree and clustering-coefficient distributions of
samples against the held-out graphs; ``*_er`` is the same for Erdős–Rényi graphs of the held-out
graphs' sizes and edge density, the baseline a model must beat, drawn with the metric's seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from foundry_plugin_geometric.data import graph_of_record, padded_adjacency
from foundry_plugin_geometric.geometry import chamfer_distance, clustering_coefficients, degrees
from foundry_plugin_geometric.modalities import sample_graphs
from model_foundry.plugin import draw_samples

CLUSTERING_BINS = 20
KERNEL_SIGMA = 1.0


def _held_out(dataset: Any, key: str, limit: int) -> torch.Tensor | None:
    if dataset is None or len(dataset) == 0:
        return None
    return dataset.batch(range(min(len(dataset), limit)))[key].float()


# --- shapes ----------------------------------------------------------------------------------


def chamfer_matrix(samples: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(S, P, 3), (R, Q, 3) -> (S, R) Chamfer distances."""
    rows = [chamfer_distance(sample.expand(len(references), -1, -1), references) for sample in samples]
    return torch.stack(rows)


def iou_distance_matrix(samples: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(S, 1, D, H, W), (R, ...) 0/1 grids -> (S, R) of 1 - intersection / union (0 for two empty grids)."""
    a, b = (samples.flatten(1) > 0.5).float(), (references.flatten(1) > 0.5).float()
    intersection = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - intersection
    return 1 - torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def pointflow_scores(cross: torch.Tensor, among_samples: torch.Tensor, among_references: torch.Tensor) -> dict[str, float]:
    """MMD, coverage and 1-NNA from the distances samples x references (S, R), samples x samples
    (S, S) and references x references (R, R)."""
    count_s, count_r = cross.shape
    mmd = cross.min(0).values.mean().item()
    coverage = len(set(cross.argmin(1).tolist())) / count_r
    infinite_s, infinite_r = torch.full((count_s,), torch.inf), torch.full((count_r,), torch.inf)
    top = torch.cat([among_samples.double() + torch.diag(infinite_s.double()), cross.double()], dim=1)
    bottom = torch.cat([cross.T.double(), among_references.double() + torch.diag(infinite_r.double())], dim=1)
    nearest = torch.cat([top, bottom]).argmin(1)
    is_sample = torch.arange(count_s + count_r) < count_s
    accuracy = (is_sample == is_sample[nearest]).double().mean().item()
    return {"mmd": mmd, "coverage": coverage, "1nna": accuracy}


def shape_sample_quality(model: Any, dataset: Any, context: Any) -> dict[str, float]:
    """MMD, coverage and 1-NNA of as many samples as held-out shapes (at most ``context.num_samples``)."""
    from model_foundry.plugin import input_key_of

    key = input_key_of(model)
    references = _held_out(dataset, key, context.num_samples)
    if references is None or len(references) < 2:
        return {}
    samples = draw_samples(model, context, len(references)).cpu()
    if key == "voxels":
        distance, name = iou_distance_matrix, "iou"
    else:
        distance, name = chamfer_matrix, "chamfer"
    with torch.no_grad():
        scores = pointflow_scores(distance(samples, references), distance(samples, samples), distance(references, references))
    return {f"{score}_{name}": value for score, value in scores.items()}


# --- graphs ----------------------------------------------------------------------------------


def graph_statistics(adjacency: np.ndarray, mask: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per graph, the normalised degree histogram (bins 0..n-1) and clustering histogram
    (``CLUSTERING_BINS`` bins over [0, 1]) of its real nodes."""
    degree_histograms, clustering_histograms = [], []
    size = adjacency.shape[-1]
    for index, matrix in enumerate(adjacency):
        graph = matrix[np.ix_(mask[index], mask[index])]
        degree_histograms.append(np.bincount(degrees(graph).astype(int), minlength=size)[:size] / max(len(graph), 1))
        clustering, _ = np.histogram(clustering_coefficients(graph), bins=CLUSTERING_BINS, range=(0.0, 1.0))
        clustering_histograms.append(clustering / max(len(graph), 1))
    return degree_histograms, clustering_histograms


def histogram_mmd(first: list[np.ndarray], second: list[np.ndarray], sigma: float = KERNEL_SIGMA) -> float:
    """Squared MMD between two sets of histograms with k(x, y) = exp(-TV(x, y)^2 / (2 sigma^2))."""
    a, b = np.stack(first), np.stack(second)

    def kernel(x: np.ndarray, y: np.ndarray) -> float:
        total_variation = 0.5 * np.abs(x[:, None, :] - y[None, :, :]).sum(-1)
        return float(np.exp(-(total_variation**2) / (2 * sigma**2)).mean())

    return kernel(a, a) + kernel(b, b) - 2 * kernel(a, b)


def erdos_renyi_like(adjacency: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Erdős–Rényi graphs with the node counts of ``adjacency`` and its overall edge density, padded alike."""
    sizes = mask.sum(1)
    density = adjacency.sum() / max(float((sizes * (sizes - 1)).sum()), 1.0)
    result = np.zeros_like(adjacency)
    for index, size in enumerate(sizes):
        upper = np.triu(rng.random((size, size)) < density, 1)
        result[index, :size, :size] = upper | upper.T
    return result


def graph_sample_quality(model: Any, dataset: Any, context: Any) -> dict[str, float]:
    """Degree and clustering MMD of samples and of the Erdős–Rényi baseline against held-out graphs;
    for a model that makes labels, the total variation of its label frequencies against theirs."""
    if dataset is None or len(dataset) < 2:
        return {}
    batch = dataset.batch(range(min(len(dataset), context.num_samples)))
    references = batch["adjacency"].float().numpy()
    mask = batch["node_mask"].numpy().astype(bool) if "node_mask" in batch else np.ones(references.shape[:2], dtype=bool)
    records = sample_graphs(draw_samples(model, context, len(references)).cpu().numpy())
    labels = _label_scores(getattr(model, "params", None), records, batch, references, mask)
    size = max(references.shape[1], *(record["num_nodes"] for record in records))
    samples = padded_adjacency([graph_of_record(record, "a sample") for record in records], size, None)
    extra = size - references.shape[1]
    references, mask = np.pad(references, ((0, 0), (0, extra), (0, extra))), np.pad(mask, ((0, 0), (0, extra)))
    baseline = erdos_renyi_like(references, mask, np.random.default_rng(context.seed))
    reference_degrees, reference_clustering = graph_statistics(references, mask)
    sample_degrees, sample_clustering = graph_statistics(samples["adjacency"], samples["node_mask"])
    baseline_degrees, baseline_clustering = graph_statistics(baseline, mask)
    return {
        "degree_mmd": histogram_mmd(sample_degrees, reference_degrees),
        "clustering_mmd": histogram_mmd(sample_clustering, reference_clustering),
        "degree_mmd_er": histogram_mmd(baseline_degrees, reference_degrees),
        "clustering_mmd_er": histogram_mmd(baseline_clustering, reference_clustering),
        **labels,
    }


def _label_scores(
    params: Any, records: list[dict[str, Any]], batch: dict, references: np.ndarray, mask: np.ndarray,
) -> dict[str, float]:
    """``node_label_tv`` / ``edge_label_tv`` where the held-out graphs have labels and the model makes them."""
    scores = {}
    if "node_labels" in batch and getattr(params, "node_labels", 0):
        generated = np.concatenate([record["node_labels"] for record in records])
        scores["node_label_tv"] = label_total_variation(generated, batch["node_labels"].numpy()[mask])
    if "edge_labels" in batch and getattr(params, "edge_labels", 0):
        # a batch of samples whose edges are all of type 0 is written without edge labels
        generated = np.asarray([edge[2] if len(edge) == 3 else 0 for record in records for edge in record["edges"]], dtype=np.int64)
        upper = np.triu(references > 0, 1)
        scores["edge_label_tv"] = label_total_variation(generated, batch["edge_labels"].numpy()[upper])
    return scores


def label_total_variation(generated: np.ndarray, references: np.ndarray) -> float:
    """Total variation distance between the label frequencies of samples and of held-out graphs
    (0: the same frequencies, 1: no label in common)."""
    classes = int(max(generated.max(initial=0), references.max(initial=0))) + 1
    first = np.bincount(generated, minlength=classes) / max(len(generated), 1)
    second = np.bincount(references, minlength=classes) / max(len(references), 1)
    return float(0.5 * np.abs(first - second).sum())

