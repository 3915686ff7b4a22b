"""The sample-quality metrics on cases with known answers."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from foundry_plugin_geometric.metrics import (
    chamfer_matrix,
    erdos_renyi_like,
    graph_statistics,
    histogram_mmd,
    iou_distance_matrix,
    pointflow_scores,
)


def scores(samples, references, distance=chamfer_matrix):
    return pointflow_scores(distance(samples, references), distance(samples, samples), distance(references, references))


def test_pointflow_scores_of_copies_and_of_a_collapsed_sampler():
    references = torch.randn(6, 10, 3, generator=torch.Generator().manual_seed(0))
    copies = scores(references.clone(), references)
    assert copies == {"mmd": 0.0, "coverage": 1.0, "1nna": 0.0}  # each copy's nearest neighbour is its original
    collapsed = scores(references[:1].expand(6, -1, -1) + 10, references)  # six identical shapes far away
    assert collapsed["coverage"] == pytest.approx(1 / 6) and collapsed["1nna"] == 1.0
    assert collapsed["mmd"] == pytest.approx(chamfer_matrix(references[:1] + 10, references).mean().item())


def test_iou_distance():
    a = torch.zeros(1, 1, 2, 2, 2)
    a[0, 0, 0] = 1  # 4 cells
    b = torch.zeros(1, 1, 2, 2, 2)
    b[0, 0, :, 0] = 1  # 4 cells, 2 shared with a
    assert iou_distance_matrix(a, b).item() == pytest.approx(1 - 2 / 6)
    assert iou_distance_matrix(a, a).item() == 0 and iou_distance_matrix(a * 0, a * 0).item() == 0


def test_graph_statistics_and_mmd():
    star = nx.to_numpy_array(nx.star_graph(3))  # 4 nodes: degrees 3, 1, 1, 1; no triangles
    padded = np.zeros((1, 6, 6))
    padded[0, :4, :4] = star
    mask = np.array([[True] * 4 + [False] * 2])
    (degree,), (clustering,) = graph_statistics(padded, mask)
    np.testing.assert_allclose(degree, [0, 0.75, 0, 0.25, 0, 0])
    assert clustering[0] == 1.0 and clustering.sum() == 1.0
    assert histogram_mmd([degree, degree], [degree]) == pytest.approx(0.0, abs=1e-12)
    other = np.array([0, 0, 1.0, 0, 0, 0])
    tv = 1.0  # disjoint supports: the total variation is 1
    assert histogram_mmd([degree], [other]) == pytest.approx(2 - 2 * np.exp(-(tv**2) / 2))


def test_erdos_renyi_baseline_keeps_sizes_and_density():
    graphs = [nx.random_partition_graph([10, 10], 0.6, 0.05, seed=i) for i in range(30)]
    adjacency = np.stack([nx.to_numpy_array(g) for g in graphs])
    mask = np.ones(adjacency.shape[:2], dtype=bool)
    baseline = erdos_renyi_like(adjacency, mask, np.random.default_rng(0))
    assert np.array_equal(baseline, baseline.transpose(0, 2, 1)) and np.trace(baseline, axis1=1, axis2=2).sum() == 0
    assert baseline.sum() / adjacency.sum() == pytest.approx(1.0, rel=0.05)
