"""Config classes and presets of the geometric architectures and dataset kinds.

No torch here: ``foundry list`` imports this module through the plugin's hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Optional

import attrs

from model_foundry.plugin import Presets, in_range, non_negative, option, positive

SHAPE_PRIMITIVES = ("box", "sphere", "cylinder", "capsule", "cone", "torus")
GRAPH_FAMILIES = ("community", "grid", "tree", "ego")
MAX_SUBDIVISIONS = 5


def icosphere_vertex_count(subdivisions: int) -> int:
    """Vertices of an icosphere subdivided ``subdivisions`` times: 10 * 4^s + 2."""
    return 10 * 4**subdivisions + 2


def _widths(name: str, widths: tuple[int, ...]) -> Iterator[tuple[str, str]]:
    if any(width < 1 for width in widths):
        yield name, f"widths must be >= 1, got {list(widths)}"


def _set_network_problems(encoder_dims: tuple[int, ...], decoder_dims: tuple[int, ...]) -> Iterator[tuple[str, str]]:
    """Checks of a PointNet encoder's and an MLP decoder's widths."""
    if not encoder_dims:
        yield "encoder_dims", "needs at least one width"
    yield from _widths("encoder_dims", encoder_dims)
    yield from _widths("decoder_dims", decoder_dims)


# --- architectures ---------------------------------------------------------------------------


@attrs.frozen
class PointCloudConfig:
    """A VAE over point sets: a PointNet encoder (shared per-point MLP, max-pool) and an MLP
    decoder that emits a fixed-size set, trained by Chamfer (or exact EMD) reconstruction."""

    num_points: int = option(256, doc="points in each generated set", validator=positive)
    latent_dim: int = option(32, doc="size of the shape latent z", validator=positive)
    encoder_dims: tuple[int, ...] = option(
        (64, 128, 256), doc="widths of the shared per-point MLP; the last is the pooled feature's size"
    )
    decoder_dims: tuple[int, ...] = option((256, 256), doc="hidden widths of the MLP from z to the point set")
    reconstruction: Literal["chamfer", "emd"] = option(
        "chamfer", doc="chamfer (squared distances, both ways) or emd (exact matching of equal-size sets, scipy)"
    )
    kl_weight: float = option(1e-3, doc="weight of KL(q(z|x) || N(0, I)) against the reconstruction", validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from _set_network_problems(self.encoder_dims, self.decoder_dims)


@attrs.frozen
class VoxelConfig:
    """A 3-D convolutional VAE on occupancy grids [1, D, D, D] with a Bernoulli likelihood."""

    resolution: int = option(16, doc="the grid's side D (8, 16, 32 in the presets tiny, small, base); the data's grids must have it", validator=positive)
    channels: tuple[int, ...] = option(
        (16, 32, 64), doc="channels of the stride-2 convolution stages; D must be divisible by 2^len(channels)"
    )
    latent_dim: int = option(64, doc="size of the shape latent z", validator=positive)
    kl_weight: float = option(1.0, doc="weight of the KL term (1: the ELBO)", validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        if not self.channels:
            yield "channels", "needs at least one stage"
            return
        yield from _widths("channels", self.channels)
        stages = len(self.channels)
        if self.resolution % 2**stages:
            fits = [r for r in (8, 16, 32, 64) if r % 2**stages == 0]
            yield "resolution", (
                f"{self.resolution} does not fit {stages} stride-2 stages (it must be divisible by {2**stages}): "
                f"use a resolution such as {fits[0] if fits else 2**stages} or fewer stages in model.channels"
            )


@attrs.frozen
class MeshConfig:
    """Deforms an icosphere template by vertex offsets decoded from a shape latent; Chamfer to the
    target surface points, with Laplacian and edge-length regularisers."""

    subdivisions: int = option(
        2, doc=f"icosphere subdivisions of the template (V = 10*4^s + 2 vertices), 0..{MAX_SUBDIVISIONS}",
        validator=in_range(0, MAX_SUBDIVISIONS),
    )
    template_radius: float = option(0.75, doc="radius of the template sphere", validator=positive)
    latent_dim: int = option(32, doc="size of the shape latent z", validator=positive)
    encoder_dims: tuple[int, ...] = option((64, 128, 256), doc="widths of the PointNet encoder of the target points")
    decoder_dims: tuple[int, ...] = option((256, 256), doc="hidden widths of the MLP from z to the vertex offsets")
    laplacian_weight: float = option(0.5, doc="weight of the uniform-Laplacian smoothness term", validator=non_negative)
    edge_weight: float = option(0.5, doc="weight of the edge-length term (sum of squared edge lengths)", validator=non_negative)
    kl_weight: float = option(1e-3, doc="weight of the KL term", validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        yield from _set_network_problems(self.encoder_dims, self.decoder_dims)

    @property
    def num_vertices(self) -> int:
        return icosphere_vertex_count(self.subdivisions)


@attrs.frozen
class GraphConfig:
    """A variational graph autoencoder: a permutation-equivariant GNN gives each node a latent,
    a symmetric pair decoder gives each edge's probability; samples draw node latents from the
    prior and a node count from the training graphs' sizes."""

    max_nodes: int = option(16, doc="largest graph (adjacency matrices are padded to this size)", validator=positive)
    latent_dim: int = option(16, doc="size of each node's latent", validator=positive)
    hidden_dims: tuple[int, ...] = option((32, 32), doc="widths of the message-passing layers of the encoder")
    edge_dims: tuple[int, ...] = option((32,), doc="hidden widths of the pair MLP that scores an edge")
    kl_weight: float = option(1.0, doc="weight of the KL term (1: the ELBO)", validator=non_negative)

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.max_nodes < 2:
            yield "max_nodes", f"a graph model needs at least 2 nodes, got {self.max_nodes}"
        if not self.hidden_dims:
            yield "hidden_dims", "needs at least one layer"
        yield from _widths("hidden_dims", self.hidden_dims)
        yield from _widths("edge_dims", self.edge_dims)


@attrs.frozen
class GraphRNNConfig:
    """An autoregressive graph generator (GraphRNN): a graph-level GRU over the nodes in
    breadth-first order and an edge-level GRU over each new node's edges to the earlier ones."""

    max_nodes: int = option(16, doc="largest graph (adjacency matrices are padded to this size)", validator=positive)
    embedding_size: int = option(32, doc="size of the embedding of a node's adjacency vector", validator=positive)
    hidden_size: int = option(64, doc="state size of the graph-level GRU", validator=positive)
    num_layers: int = option(2, doc="layers of the graph-level GRU", validator=positive)
    edge_embedding_size: int = option(8, doc="size of the embedding of one edge bit", validator=positive)
    edge_hidden_size: int = option(16, doc="state size of the edge-level GRU", validator=positive)
    node_labels: int = option(
        0, doc="classes of node labels to generate (the data's node_labels: 0..node_labels-1); 0: unlabelled nodes",
        validator=non_negative,
    )
    edge_labels: int = option(
        0, doc="classes of edge labels to generate (the data's edge_labels); 0: unlabelled edges", validator=non_negative,
    )

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.max_nodes < 2:
            yield "max_nodes", f"a graph model needs at least 2 nodes, got {self.max_nodes}"


POINT_CLOUD_PRESETS = Presets()
VOXEL_PRESETS = Presets()
MESH_PRESETS = Presets()
GRAPH_PRESETS = Presets()
GRAPH_RNN_PRESETS = Presets()


@POINT_CLOUD_PRESETS.register("tiny")
def point_cloud_tiny() -> PointCloudConfig:
    return PointCloudConfig(num_points=32, latent_dim=8, encoder_dims=(16, 32), decoder_dims=(64,))


@POINT_CLOUD_PRESETS.register("small")
def point_cloud_small() -> PointCloudConfig:
    return PointCloudConfig(num_points=256, latent_dim=32, encoder_dims=(64, 128, 256), decoder_dims=(256, 256))


@POINT_CLOUD_PRESETS.register("base")
def point_cloud_base() -> PointCloudConfig:
    return PointCloudConfig(num_points=1024, latent_dim=128, encoder_dims=(64, 128, 256, 512), decoder_dims=(512, 1024))


@VOXEL_PRESETS.register("tiny")
def voxel_tiny() -> VoxelConfig:
    return VoxelConfig(resolution=8, channels=(4, 8), latent_dim=8)


@VOXEL_PRESETS.register("small")
def voxel_small() -> VoxelConfig:
    return VoxelConfig(resolution=16, channels=(16, 32, 64), latent_dim=64)


@VOXEL_PRESETS.register("base")
def voxel_base() -> VoxelConfig:
    return VoxelConfig(resolution=32, channels=(32, 64, 128, 256), latent_dim=128)


@MESH_PRESETS.register("tiny")
def mesh_tiny() -> MeshConfig:
    return MeshConfig(subdivisions=1, latent_dim=8, encoder_dims=(16, 32), decoder_dims=(64,))


@MESH_PRESETS.register("small")
def mesh_small() -> MeshConfig:
    return MeshConfig(subdivisions=2, latent_dim=32, encoder_dims=(64, 128, 256), decoder_dims=(256, 256))


@MESH_PRESETS.register("base")
def mesh_base() -> MeshConfig:
    return MeshConfig(subdivisions=3, latent_dim=64, encoder_dims=(64, 128, 256, 512), decoder_dims=(512, 512))


@GRAPH_PRESETS.register("tiny")
def graph_tiny() -> GraphConfig:
    return GraphConfig(max_nodes=8, latent_dim=4, hidden_dims=(16,), edge_dims=(16,))


@GRAPH_PRESETS.register("small")
def graph_small() -> GraphConfig:
    return GraphConfig(max_nodes=16, latent_dim=16, hidden_dims=(32, 32), edge_dims=(32,))


@GRAPH_PRESETS.register("base")
def graph_base() -> GraphConfig:
    return GraphConfig(max_nodes=40, latent_dim=32, hidden_dims=(64, 64, 64), edge_dims=(64, 64))


@GRAPH_RNN_PRESETS.register("tiny")
def graph_rnn_tiny() -> GraphRNNConfig:
    return GraphRNNConfig(max_nodes=8, embedding_size=8, hidden_size=16, num_layers=1, edge_embedding_size=4,
                          edge_hidden_size=8)


@GRAPH_RNN_PRESETS.register("small")
def graph_rnn_small() -> GraphRNNConfig:
    return GraphRNNConfig(max_nodes=16, embedding_size=32, hidden_size=64, num_layers=2, edge_embedding_size=8,
                          edge_hidden_size=16)


@GRAPH_RNN_PRESETS.register("base")
def graph_rnn_base() -> GraphRNNConfig:
    return GraphRNNConfig(max_nodes=40, embedding_size=64, hidden_size=128, num_layers=4, edge_embedding_size=8,
                          edge_hidden_size=16)


# --- dataset kinds ---------------------------------------------------------------------------


def _validation_fraction() -> float:
    return option(0.1, doc="fraction held out for validation (0: none)", validator=in_range(0.0, 0.9))


@attrs.frozen
class ShapesDataConfig:
    """``data`` of kind ``shapes``: trimesh primitives with random proportions and rotations, seeded,
    normalised into the unit ball, as point clouds, surface points of meshes, or voxel grids."""

    modality: Literal["point_cloud", "mesh", "voxel"] = option(
        "point_cloud", doc="point_cloud (points on the surface), mesh (surface points, for the mesh model) or voxel"
    )
    shapes: list[str] = option(factory=lambda: list(SHAPE_PRIMITIVES), doc="primitives drawn: " + ", ".join(SHAPE_PRIMITIVES))
    num_examples: int = option(600, doc="shapes drawn (training and validation together)", validator=positive)
    num_points: int = option(256, doc="points per shape (point_cloud and mesh)", validator=positive)
    resolution: int = option(16, doc="voxel grid side (voxel)", validator=positive)
    rotate: bool = option(True, doc="rotate each shape uniformly at random")
    seed: int = option(0, doc="seed of the shapes and of the train/validation split")
    validation_fraction: float = _validation_fraction()

    def validate(self) -> Iterator[tuple[str, str]]:
        unknown = [name for name in self.shapes if name not in SHAPE_PRIMITIVES]
        if unknown:
            yield "shapes", f"unknown primitive(s) {unknown}; choose from {', '.join(SHAPE_PRIMITIVES)}"
        elif not self.shapes:
            yield "shapes", "name at least one primitive"


@attrs.frozen
class MeshFolderDataConfig:
    """``data`` of kind ``mesh_folder``: .ply/.obj/.off/.stl files under a folder, normalised into
    the unit ball, as point clouds, surface points or voxel grids (voxels need closed meshes)."""

    path: str = option(doc="the folder (searched recursively; relative paths start at the working directory)")
    modality: Literal["point_cloud", "mesh", "voxel"] = option("point_cloud", doc="as for kind shapes")
    num_points: int = option(256, doc="points sampled on each surface (point_cloud and mesh)", validator=positive)
    resolution: int = option(16, doc="voxel grid side (voxel)", validator=positive)
    labels_from_folders: bool = option(False, doc="class labels from the name of each file's top sub-folder")
    seed: int = option(0, doc="seed of the surface sampling and of the train/validation split")
    validation_fraction: float = _validation_fraction()


@attrs.frozen
class GraphsDataConfig:
    """``data`` of kind ``graphs``: synthetic graphs from networkx generators, seeded, as adjacency
    matrices padded to ``max_nodes`` with a node mask."""

    family: Literal["community", "grid", "tree", "ego"] = option(
        "community", doc="community (two dense groups, sparse between), grid (2-D lattices), tree (random trees), "
        "ego (ego graphs of a Barabasi-Albert graph)"
    )
    num_graphs: int = option(200, doc="graphs drawn (training and validation together)", validator=positive)
    min_nodes: int = option(8, doc="fewest nodes of a graph", validator=positive)
    max_nodes: int = option(16, doc="most nodes of a graph; adjacency matrices are padded to this size", validator=positive)
    node_labels: bool = option(False, doc="label each node with its community, 0 or 1, as node_labels (family community)")
    seed: int = option(0, doc="seed of the graphs and of the train/validation split")
    validation_fraction: float = _validation_fraction()

    def validate(self) -> Iterator[tuple[str, str]]:
        if self.min_nodes < 2:
            yield "min_nodes", f"graphs need at least 2 nodes, got {self.min_nodes}"
        if self.max_nodes < self.min_nodes:
            yield "max_nodes", f"must be >= min_nodes ({self.min_nodes}), got {self.max_nodes}"
        if self.node_labels and self.family != "community":
            yield "node_labels", f"only community graphs have node labels (their community); family is {self.family!r}"


@attrs.frozen
class GraphFileDataConfig:
    """``data`` of kind ``graph_file``: graphs from a JSON-lines file, one graph a line:
    ``{"num_nodes": 5, "edges": [[0, 1], [1, 2]]}`` (undirected, nodes 0..num_nodes-1); labels
    optional: ``"node_labels": [0, 2, ...]`` and edges as ``[i, j, label]``."""

    path: str = option(doc="the .jsonl file (relative paths start at the working directory)")
    max_nodes: Optional[int] = option(None, doc="pad adjacency matrices to this size (default: the largest graph's)", validator=positive)
    seed: int = option(0, doc="seed of the train/validation split")
    validation_fraction: float = _validation_fraction()
