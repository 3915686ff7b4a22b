"""The shared maths against brute force, trimesh, networkx and pot."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest
import torch
import trimesh
from foundry_plugin_geometric import geometry
from foundry_plugin_geometric.data import _primitive, normalising_transform, synthetic_shape


def brute_force_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    a_to_b = [min(float(((p - q) ** 2).sum()) for q in b) for p in a]
    b_to_a = [min(float(((p - q) ** 2).sum()) for q in a) for p in b]
    return sum(a_to_b) / len(a) + sum(b_to_a) / len(b)


def test_chamfer_equals_brute_force_and_is_symmetric():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, 3, generator=generator, dtype=torch.float64), torch.randn(3, 5, 3, generator=generator, dtype=torch.float64)
    distance = geometry.chamfer_distance(a, b)
    expected = [brute_force_chamfer(x.numpy(), y.numpy()) for x, y in zip(a, b, strict=True)]
    torch.testing.assert_close(distance, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(geometry.chamfer_distance(b, a), distance)
    assert torch.all(geometry.chamfer_distance(a, a) == 0)


def test_masked_chamfer_ignores_padding():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 6, 3, generator=generator), torch.randn(1, 4, 3, generator=generator)
    padded = torch.cat([b, torch.zeros(1, 3, 3)], dim=1)  # padding at the origin, among the points
    mask = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(geometry.chamfer_distance(a, padded, None, mask), geometry.chamfer_distance(a, b))
    torch.testing.assert_close(geometry.chamfer_distance(padded, a, mask, None), geometry.chamfer_distance(b, a))


def test_earth_movers_distance_matches_pot_and_brute_force():
    ot = pytest.importorskip("ot")
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 6, 3, generator=generator, dtype=torch.float64), torch.randn(2, 6, 3, generator=generator, dtype=torch.float64)
    ours = geometry.earth_movers_distance(a, b)
    for index in range(2):
        costs = geometry.squared_distances(a[index : index + 1], b[index : index + 1])[0].numpy()
        weights = np.full(6, 1 / 6)
        assert ours[index].item() == pytest.approx(ot.emd2(weights, weights, costs), rel=1e-9)
        best = min(sum(costs[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6))) / 6
        assert ours[index].item() == pytest.approx(best, rel=1e-9)


def test_gaussian_kl_closed_form():
    mean, log_variance = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, -0.3]])
    expected = sum(0.5 * (m**2 + math.exp(v) - 1 - v) for m, v in [(0.5, 0.2), (-1.0, -0.3)])
    assert geometry.gaussian_kl(mean, log_variance).item() == pytest.approx(expected, rel=1e-6)


# --- meshes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("subdivisions", [0, 1, 2, 3])
def test_template_is_a_watertight_sphere(subdivisions):
    vertices, faces = geometry.icosphere(subdivisions, radius=0.75)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.euler_number == 2
    assert len(vertices) == 10 * 4**subdivisions + 2
    assert len(geometry.unique_edges(faces)) == 3 * len(faces) // 2
    np.testing.assert_allclose(np.linalg.norm(vertices, axis=1), 0.75)


def flat_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size regular grid of vertices on a plane, each square cut into two triangles."""
    xs, ys = np.meshgrid(np.arange(size, dtype=float), np.arange(size, dtype=float), indexing="ij")
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(size * size)], axis=1)
    faces = []
    for i, j in itertools.product(range(size - 1), repeat=2):
        v = i * size + j
        faces += [[v, v + size, v + 1], [v + 1, v + size, v + size + 1]]
    return vertices, np.array(faces)


def test_laplacian_of_a_flat_grid_is_zero_inside():
    size = 6
    vertices, faces = flat_grid(size)
    tilted = vertices.copy()
    tilted[:, 2] = 0.3 * vertices[:, 0] - 0.7 * vertices[:, 1] + 2.0  # any plane: the Laplacian is linear
    edges = torch.as_tensor(geometry.unique_edges(faces))
    for points in (vertices, tilted):
        laplacian = geometry.uniform_laplacian(torch.as_tensor(points)[None], edges)[0].norm(dim=-1).reshape(size, size)
        assert torch.allclose(laplacian[1:-1, 1:-1], torch.zeros(size - 2, size - 2, dtype=torch.float64), atol=1e-12)
        assert laplacian[0, 0] > 0.1 and laplacian[-1, 2] > 0.1  # on the border it is not


def test_laplacian_matches_a_hand_computation():
    vertices = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 2, 0]]])
    edges = torch.tensor([[0, 1], [0, 2]])
    expected = torch.tensor([[[-0.5, -1.0, 0], [1, 0, 0], [0, 2, 0]]])
    torch.testing.assert_close(geometry.uniform_laplacian(vertices, edges), expected)


def test_voxelised_sphere_has_the_sphere_volume():
    radius, resolution = 0.8, 20
    vertices, faces = geometry.icosphere(2, radius)
    occupancy = geometry.voxelize(vertices, faces, resolution)
    volume = occupancy.sum() * (2 / resolution) ** 3
    assert volume == pytest.approx(trimesh.Trimesh(vertices, faces).volume, rel=0.03)  # the polyhedron's own volume
    assert volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.03)
    assert occupancy[0].sum() == 0 and occupancy[resolution // 2, resolution // 2, resolution // 2] == 1


def test_winding_numbers_inside_and_outside():
    vertices, faces = geometry.icosphere(2)
    numbers = geometry.winding_numbers(vertices, faces, np.array([[0.0, 0, 0], [0.2, 0.3, -0.1], [2.0, 0, 0], [0, -1.5, 1]]))
    np.testing.assert_allclose(numbers, [1, 1, 0, 0], atol=1e-6)


@pytest.mark.parametrize("name", ["box", "sphere", "cylinder", "capsule", "cone", "torus"])
def test_analytic_inside_tests_agree_with_the_primitive_meshes(name):
    mesh, inside = _primitive(name, np.random.default_rng(3))
    points = np.random.default_rng(4).uniform(-1.2, 1.2, (600, 3)) * np.asarray(mesh.extents) / 2 + mesh.bounds.mean(0)
    by_mesh = geometry.winding_numbers(np.asarray(mesh.vertices), np.asarray(mesh.faces), points) > 0.5
    # Faceted meshes differ from the exact solids in a thin shell near curved surfaces.
    assert (by_mesh == inside(points)).mean() > 0.97
    assert inside(points).sum() > 50


def test_synthetic_shapes_fill_the_unit_ball():
    rng = np.random.default_rng(0)
    points = synthetic_shape("torus", rng, "point_cloud", 500, 16)
    assert points.shape == (500, 3) and points.dtype == np.float32
    assert np.linalg.norm(points, axis=1).max() <= 0.95 + 1e-6
    grid = synthetic_shape("box", rng, "voxel", 64, 16)
    assert grid.shape == (1, 16, 16, 16) and set(np.unique(grid)) <= {0.0, 1.0} and grid.sum() > 20
    assert grid[0, 0].sum() == 0 and grid[0, :, 0].sum() == 0  # the border stays empty: the shape lies inside radius 0.95
    centre, factor = normalising_transform(np.array([[0.0, 0, 0], [2, 0, 0]]))
    np.testing.assert_allclose(centre, [1, 0, 0])
    assert factor == pytest.approx(0.95)


# --- graphs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "graph", [nx.karate_club_graph(), nx.petersen_graph(), nx.grid_2d_graph(3, 4), nx.random_partition_graph([6, 7], 0.7, 0.1, seed=1)],
    ids=["karate", "petersen", "grid", "community"],
)
def test_degree_and_clustering_equal_networkx(graph):
    adjacency = nx.to_numpy_array(graph, weight=None)
    nodes = list(graph.nodes)
    np.testing.assert_array_equal(geometry.degrees(adjacency), [graph.degree[node] for node in nodes])
    clustering = nx.clustering(graph)
    np.testing.assert_allclose(geometry.clustering_coefficients(adjacency), [clustering[node] for node in nodes], atol=1e-12)


def test_symmetric_without_loops():
    adjacency = torch.tensor([[[1.0, 1, 0], [0, 0, 0], [0.9, 0, 1]]])
    expected = torch.tensor([[[0.0, 1, 1], [1, 0, 0], [1, 0, 0]]])
    torch.testing.assert_close(geometry.symmetric_without_loops(adjacency), expected)
