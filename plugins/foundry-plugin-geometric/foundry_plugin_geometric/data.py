"""The dataset kinds of the plugin: ``shapes``, ``mesh_folder``, ``graphs`` and ``graph_file``.

Every shape is centred and scaled into the unit ball (then by a random factor in
[``MIN_SCALE``, 1] for synthetic shapes), so voxel grids over [-1, 1]^3 hold it whole. Synthetic
primitives are voxelised exactly by their analytic inside tests; meshes from files by
generalised winding numbers, which need closed surfaces.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from foundry_plugin_geometric.config import (
    GraphFileDataConfig,
    GraphsDataConfig,
    MeshFolderDataConfig,
    ShapesDataConfig,
)
from foundry_plugin_geometric.geometry import voxel_centres, voxelize
from model_foundry.plugin import ConfigError, DataContext, LoadedData, Problem, split_arrays

MESH_EXTENSIONS = (".ply", ".obj", ".off", ".stl")
MIN_SCALE = 0.7
BALL_RADIUS = 0.95  # shapes fit inside this radius, so cells on the grid's border stay empty


# --- synthetic shapes ------------------------------------------------------------------------


def _primitive(name: str, rng: np.random.Generator) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    """A trimesh primitive with random proportions and its exact inside test in its own frame."""
    import trimesh

    if name == "box":
        extents = rng.uniform(0.5, 2.0, 3)
        return trimesh.creation.box(extents=extents), lambda p: (np.abs(p) <= extents / 2).all(-1)
    if name == "sphere":
        axes = rng.uniform(0.6, 1.0, 3)
        mesh = trimesh.creation.icosphere(subdivisions=3)
        mesh.apply_scale(axes)
        return mesh, lambda p: ((p / axes) ** 2).sum(-1) <= 1
    if name == "cylinder":
        radius, height = rng.uniform(0.3, 1.0), rng.uniform(0.5, 2.0)
        mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=32)
        return mesh, lambda p: ((p[:, :2] ** 2).sum(-1) <= radius**2) & (np.abs(p[:, 2]) <= height / 2)
    if name == "capsule":
        radius, height = rng.uniform(0.3, 0.8), rng.uniform(0.5, 1.5)
        mesh = trimesh.creation.capsule(radius=radius, height=height, count=[16, 16])

        def inside_capsule(p: np.ndarray) -> np.ndarray:
            axial = np.clip(p[:, 2], -height / 2, height / 2)  # nearest point of the axis segment
            return (p[:, :2] ** 2).sum(-1) + (p[:, 2] - axial) ** 2 <= radius**2

        return mesh, inside_capsule
    if name == "cone":
        radius, height = rng.uniform(0.4, 1.0), rng.uniform(0.5, 2.0)
        mesh = trimesh.creation.cone(radius=radius, height=height, sections=32)  # base at z=0, apex at z=height
        return mesh, lambda p: (
            (p[:, 2] >= 0) & (p[:, 2] <= height) & (np.sqrt((p[:, :2] ** 2).sum(-1)) <= radius * (1 - p[:, 2] / height))
        )
    if name == "torus":
        major, minor = 1.0, rng.uniform(0.2, 0.5)
        mesh = trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=32, minor_sections=16)
        return mesh, lambda p: (np.sqrt((p[:, :2] ** 2).sum(-1)) - major) ** 2 + p[:, 2] ** 2 <= minor**2
    raise ValueError(f"unknown primitive {name!r}")


def normalising_transform(vertices: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """The centre (of the bounding box) and factor that put ``vertices`` inside a ball of radius
    ``BALL_RADIUS * scale``: ``world = (local - centre) * factor``."""
    centre = (vertices.min(0) + vertices.max(0)) / 2
    radius = np.linalg.norm(vertices - centre, axis=1).max()
    return centre, BALL_RADIUS * scale / max(radius, 1e-12)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly (Haar) from ``rng``."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=rng).as_matrix()


def synthetic_shape(
    name: str, rng: np.random.Generator, modality: str, num_points: int, resolution: int, rotate: bool = True,
) -> np.ndarray:
    """One primitive, drawn from ``rng``, as surface points (P, 3) or an occupancy grid (1, R, R, R)."""
    mesh, inside = _primitive(name, rng)
    rotation = random_rotation(rng) if rotate else np.eye(3)
    vertices = np.asarray(mesh.vertices) @ rotation.T
    centre, factor = normalising_transform(vertices, rng.uniform(MIN_SCALE, 1.0))
    if modality == "voxel":
        local = (voxel_centres(resolution) / factor + centre) @ rotation  # world -> the primitive's frame
        return inside(local).reshape(1, resolution, resolution, resolution).astype(np.float32)
    points = _surface_points(mesh, num_points, rng) @ rotation.T
    return ((points - centre) * factor).astype(np.float32)


def _surface_points(mesh: Any, count: int, rng: np.random.Generator) -> np.ndarray:
    import trimesh

    points, _ = trimesh.sample.sample_surface(mesh, count, seed=int(rng.integers(2**31)))
    return np.asarray(points)


def _arrays(modality: str, examples: list[np.ndarray]) -> dict[str, np.ndarray]:
    key = {"point_cloud": "points", "mesh": "surface_points", "voxel": "voxels"}[modality]
    return {key: np.stack(examples).astype(np.float32)}


def load_shapes(config: ShapesDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``shapes``: primitives labelled by their index in ``config.shapes``."""
    rng = np.random.default_rng(config.seed)
    labels = rng.integers(len(config.shapes), size=config.num_examples)
    examples = [
        synthetic_shape(config.shapes[label], rng, config.modality, config.num_points, config.resolution, config.rotate)
        for label in labels
    ]
    arrays = {**_arrays(config.modality, examples), "class_labels": labels.astype(np.int64)}
    info = {"shapes": list(config.shapes), "num_classes": len(config.shapes), "resolution": config.resolution}
    return split_arrays(
        arrays, modality=config.modality, validation_fraction=config.validation_fraction, seed=config.seed, info=info,
    )


# --- mesh files ------------------------------------------------------------------------------


def read_mesh(path: str, key: str = "data.path") -> Any:
    """A triangle mesh from a file; a ConfigError naming the file when it holds none."""
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many kinds of errors on malformed files
        raise ConfigError(Problem(f"{path!r} is not a readable mesh ({type(exc).__name__}: {exc})", key)) from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ConfigError(Problem(f"{path!r} holds no triangles; a mesh file needs faces", key))
    return mesh


def mesh_example(mesh: Any, path: str, modality: str, num_points: int, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """A mesh normalised into the unit ball, as surface points (P, 3) or occupancy (1, R, R, R)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    centre, factor = normalising_transform(vertices)
    if modality == "voxel":
        if not mesh.is_watertight:
            raise ConfigError(Problem(
                f"{path!r} is not a closed manifold surface (not watertight), so it has no inside to voxelise; "
                "repair it or use data.modality point_cloud", "data.path",
            ))
        return voxelize((vertices - centre) * factor, np.asarray(mesh.faces), resolution)[None]
    return ((_surface_points(mesh, num_points, rng) - centre) * factor).astype(np.float32)


def load_mesh_folder(config: MeshFolderDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``mesh_folder``."""
    root = os.path.expanduser(config.path)
    if not os.path.isdir(root):
        raise ConfigError(Problem(f"folder not found: {config.path!r} (relative paths start at {os.getcwd()})", "data.path"))
    files = sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
        if name.lower().endswith(MESH_EXTENSIONS)
    )
    if not files:
        raise ConfigError(Problem(f"no {'/'.join(MESH_EXTENSIONS)} files under {config.path!r}", "data.path"))
    rng = np.random.default_rng(config.seed)
    examples = [
        mesh_example(read_mesh(path), path, config.modality, config.num_points, config.resolution, rng) for path in files
    ]
    arrays = _arrays(config.modality, examples)
    info: dict[str, Any] = {"resolution": config.resolution}
    if config.labels_from_folders:
        classes = [os.path.relpath(path, root).split(os.sep)[0] for path in files]
        names = sorted(set(classes))
        arrays["class_labels"] = np.array([names.index(name) for name in classes], dtype=np.int64)
        info.update(class_names=names, num_classes=len(names))
    return split_arrays(
        arrays, modality=config.modality, validation_fraction=config.validation_fraction, seed=config.seed, info=info,
    )


# --- graphs ----------------------------------------------------------------------------------


def synthetic_graph(family: str, rng: np.random.Generator, min_nodes: int, max_nodes: int) -> Any:
    """One networkx graph of ``family`` with min_nodes..max_nodes nodes, drawn from ``rng``; a
    community graph's nodes carry their community as ``label``."""
    import networkx as nx

    seed = int(rng.integers(2**31))
    if family == "community":
        size = int(rng.integers(min_nodes, max_nodes + 1))
        graph = nx.random_partition_graph([size // 2, size - size // 2], 0.7, 0.05, seed=seed)
        for community, nodes in enumerate(graph.graph["partition"]):
            nx.set_node_attributes(graph, dict.fromkeys(nodes, community), "label")
        return graph
    if family == "grid":
        shapes = [(r, c) for r in range(2, max_nodes + 1) for c in range(r, max_nodes + 1) if min_nodes <= r * c <= max_nodes]
        if not shapes:
            raise ConfigError(Problem(f"no 2-D grid has between {min_nodes} and {max_nodes} nodes", "data.max_nodes"))
        rows, columns = shapes[int(rng.integers(len(shapes)))]
        return nx.grid_2d_graph(rows, columns)
    if family == "tree":
        return nx.random_labeled_tree(int(rng.integers(min_nodes, max_nodes + 1)), seed=seed)
    if family == "ego":
        host = nx.barabasi_albert_graph(4 * max_nodes, 2, seed=seed)
        centre = int(rng.integers(len(host)))
        ego = nx.ego_graph(host, centre, radius=2)
        keep = [centre] + [node for node in nx.bfs_tree(ego, centre) if node != centre][: max_nodes - 1]
        return host.subgraph(keep)
    raise ValueError(f"unknown graph family {family!r}")


def padded_adjacency(
    graphs: list[Any], max_nodes: int, rng: np.random.Generator | None, *, node_labels: bool = False, edge_labels: bool = False,
) -> dict[str, np.ndarray]:
    """Adjacency matrices (N, max_nodes, max_nodes) float32 and node masks (N, max_nodes) of graphs,
    their nodes in a random order (``rng``; networkx's order without one), padding last; with
    ``node_labels`` / ``edge_labels`` also the nodes' and edges' ``label`` attributes as int64
    (N, max_nodes) / (N, max_nodes, max_nodes), zero on padding and where there is no edge."""
    import networkx as nx

    count = len(graphs)
    adjacency = np.zeros((count, max_nodes, max_nodes), dtype=np.float32)
    mask = np.zeros((count, max_nodes), dtype=bool)
    node_values = np.zeros((count, max_nodes), dtype=np.int64)
    edge_values = np.zeros((count, max_nodes, max_nodes), dtype=np.int64)
    for index, graph in enumerate(graphs):
        nodes = list(graph.nodes)
        size = len(nodes)
        order = [nodes[i] for i in (rng.permutation(size) if rng is not None else range(size))]
        matrix = nx.to_numpy_array(graph, nodelist=order, dtype=np.float32)
        adjacency[index, :size, :size] = (matrix > 0) & ~np.eye(size, dtype=bool)
        mask[index, :size] = True
        if node_labels:
            node_values[index, :size] = [graph.nodes[node]["label"] for node in order]
        if edge_labels:
            edge_values[index, :size, :size] = nx.to_numpy_array(graph, nodelist=order, weight="label", nonedge=0)
    arrays = {"adjacency": adjacency, "node_mask": mask}
    if node_labels:
        arrays["node_labels"] = node_values
    if edge_labels:
        arrays["edge_labels"] = edge_values
    return arrays


def load_graphs(config: GraphsDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``graphs``."""
    rng = np.random.default_rng(config.seed)
    graphs = [synthetic_graph(config.family, rng, config.min_nodes, config.max_nodes) for _ in range(config.num_graphs)]
    arrays = padded_adjacency(graphs, config.max_nodes, rng, node_labels=config.node_labels)
    info = {"family": config.family, "max_nodes": config.max_nodes, **({"num_node_labels": 2} if config.node_labels else {})}
    return split_arrays(arrays, modality="graph", validation_fraction=config.validation_fraction, seed=config.seed, info=info)


GRAPH_LINE = '{"num_nodes": N, "edges": [[i, j] or [i, j, label], ...], "node_labels": [...] (optional)}'


def graph_of_record(record: Any, where: str) -> Any:
    """One line's graph: networkx, with ``label`` attributes where the line gives labels."""
    import networkx as nx

    count = int(record["num_nodes"])
    if count < 1:
        raise ConfigError(Problem(f"{where}: an empty graph (num_nodes {count}); every graph needs nodes", "data.path"))
    edges = [tuple(int(value) for value in edge) for edge in record.get("edges", [])]
    if any(len(edge) not in (2, 3) for edge in edges):
        raise ConfigError(Problem(f"{where}: an edge is [i, j] or [i, j, label]", "data.path"))
    bad = [edge for edge in edges if not (0 <= edge[0] < count and 0 <= edge[1] < count)]
    if bad:
        raise ConfigError(Problem(f"{where}: edges {bad[:3]} name nodes outside 0..{count - 1}", "data.path"))
    graph = nx.Graph()
    labels = record.get("node_labels")
    if labels is not None:
        if len(labels) != count:
            raise ConfigError(Problem(f"{where}: node_labels has {len(labels)} labels for {count} nodes", "data.path"))
        graph.add_nodes_from((node, {"label": int(label)}) for node, label in enumerate(labels))
    graph.add_nodes_from(range(count))
    for edge in edges:
        graph.add_edge(edge[0], edge[1], **({"label": edge[2]} if len(edge) == 3 else {}))
    return graph


def read_graph_file(path: str) -> list[Any]:
    """Graphs of a JSON-lines file (``GRAPH_LINE`` per line); a ConfigError naming the file and
    line for anything else: empty graphs, labels on some lines or edges only, negative labels."""
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise ConfigError(Problem(f"file not found: {path!r} (relative paths start at {os.getcwd()})", "data.path"))
    graphs, kinds = [], set()
    with open(full, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                graph = graph_of_record(json.loads(line), where)
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(Problem(f"{where}: expected {GRAPH_LINE} ({type(exc).__name__}: {exc})", "data.path")) from None
            node_labelled = all("label" in data for _, data in graph.nodes(data=True))
            edge_labelled = graph.number_of_edges() > 0 and all("label" in data for *_, data in graph.edges(data=True))
            if any(data.get("label", 0) < 0 for _, data in graph.nodes(data=True)) or any(
                data.get("label", 0) < 0 for *_, data in graph.edges(data=True)
            ):
                raise ConfigError(Problem(f"{where}: labels are 0, 1, 2, ...; got a negative one", "data.path"))
            if any("label" in data for *_, data in graph.edges(data=True)) and not edge_labelled:
                raise ConfigError(Problem(f"{where}: some edges have a label and some not; label all or none", "data.path"))
            kinds.add((node_labelled, edge_labelled or graph.number_of_edges() == 0))
            graphs.append(graph)
    if not graphs:
        raise ConfigError(Problem(f"{path!r} holds no graphs", "data.path"))
    if len({node for node, _ in kinds}) > 1:
        raise ConfigError(Problem(f"{path!r}: some graphs have node_labels and some not; label all or none", "data.path"))
    return graphs


def load_graph_file(config: GraphFileDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``graph_file``."""
    graphs = read_graph_file(config.path)
    largest = max(len(graph) for graph in graphs)
    max_nodes = config.max_nodes or largest
    if largest > max_nodes:
        raise ConfigError(Problem(f"{config.path!r} has a graph of {largest} nodes, more than max_nodes {max_nodes}", "data.max_nodes"))
    node_labels = all("label" in data for graph in graphs for _, data in graph.nodes(data=True))
    edge_labels = any("label" in data for graph in graphs for *_, data in graph.edges(data=True))
    if edge_labels and not all("label" in data for graph in graphs for *_, data in graph.edges(data=True)):
        raise ConfigError(Problem(f"{config.path!r}: some graphs have edge labels and some not; label all or none", "data.path"))
    arrays = padded_adjacency(graphs, max_nodes, None, node_labels=node_labels, edge_labels=edge_labels)
    info: dict[str, Any] = {"max_nodes": max_nodes}
    if node_labels:
        info["num_node_labels"] = int(arrays["node_labels"].max()) + 1
    if edge_labels:
        info["num_edge_labels"] = int(arrays["edge_labels"].max()) + 1
    return split_arrays(
        arrays, modality="graph", validation_fraction=config.validation_fraction, seed=config.seed, info=info,
    )
