"""Hook implementations of foundry-plugin-geometric: the ``point_cloud``, ``voxel``, ``mesh`` and
``graph`` architectures, the ``voxel``, ``mesh`` and ``graph`` modalities (``point_cloud`` is the
core's), and the ``shapes``, ``mesh_folder``, ``graphs`` and ``graph_file`` dataset kinds.

Only hooks, and no torch: models, loaders and writers are named as ``"module:function"``.
"""

from __future__ import annotations

from foundry_plugin_geometric.config import (
    GRAPH_PRESETS,
    GRAPH_RNN_PRESETS,
    MESH_PRESETS,
    POINT_CLOUD_PRESETS,
    VOXEL_PRESETS,
    GraphConfig,
    GraphFileDataConfig,
    GraphRNNConfig,
    GraphsDataConfig,
    MeshConfig,
    MeshFolderDataConfig,
    PointCloudConfig,
    ShapesDataConfig,
    VoxelConfig,
)
from model_foundry.plugin import (
    ArchitectureSchema,
    Capabilities,
    DatasetSpec,
    MetricSpec,
    ModalitySpec,
    ModelBuilder,
    hookimpl,
)

PACKAGE = "foundry_plugin_geometric"


@hookimpl
def foundry_config_schemas() -> list[ArchitectureSchema]:
    return [
        ArchitectureSchema(
            name="point_cloud", config_class=PointCloudConfig, family="geometric",
            description="VAE over point sets: PointNet encoder, MLP set decoder, Chamfer or EMD reconstruction",
            presets=POINT_CLOUD_PRESETS,
            capabilities=Capabilities(modality="point_cloud", sampling=True, latent=True),
        ),
        ArchitectureSchema(
            name="voxel", config_class=VoxelConfig, family="geometric",
            description="3-D convolutional VAE on occupancy grids with a Bernoulli likelihood",
            presets=VOXEL_PRESETS,
            capabilities=Capabilities(modality="voxel", sampling=True, likelihood="bound", latent=True),
        ),
        ArchitectureSchema(
            name="mesh", config_class=MeshConfig, family="geometric",
            description="icosphere template deformed by decoded vertex offsets; Chamfer, Laplacian and edge-length terms",
            presets=MESH_PRESETS,
            capabilities=Capabilities(modality="mesh", sampling=True),
        ),
        ArchitectureSchema(
            name="graph", config_class=GraphConfig, family="geometric",
            description="variational graph autoencoder: equivariant GNN encoder, symmetric pair decoder",
            presets=GRAPH_PRESETS,
            capabilities=Capabilities(modality="graph", sampling=True, latent=True),
        ),
        ArchitectureSchema(
            name="graph_rnn", config_class=GraphRNNConfig, family="geometric",
            description="autoregressive graph generator (GraphRNN): node-level and edge-level GRUs in breadth-first order",
            presets=GRAPH_RNN_PRESETS,
            capabilities=Capabilities(modality="graph", sampling=True),
        ),
    ]


@hookimpl
def foundry_model_builders() -> list[ModelBuilder]:
    return [
        ModelBuilder("point_cloud", f"{PACKAGE}.point_cloud:build"),
        ModelBuilder("voxel", f"{PACKAGE}.voxel:build"),
        ModelBuilder("mesh", f"{PACKAGE}.mesh:build"),
        ModelBuilder("graph", f"{PACKAGE}.graph:build"),
        ModelBuilder("graph_rnn", f"{PACKAGE}.graph_rnn:build"),
    ]


@hookimpl
def foundry_modalities() -> list[ModalitySpec]:
    return [
        ModalitySpec(
            "voxel", "voxels", "occupancy grids, 0/1 float32", "(1, depth, height, width)",
            f"{PACKAGE}.modalities:write_voxels", f"{PACKAGE}.modalities:collate_voxels",
        ),
        ModalitySpec(
            "mesh", "surface_points", "points on mesh surfaces; samples are icosphere-template vertices (.obj)",
            "(points, 3)", f"{PACKAGE}.modalities:write_meshes",
        ),
        ModalitySpec(
            "graph", "adjacency", "0/1 symmetric adjacency matrices with an empty diagonal, and node_mask",
            "(nodes, nodes)", f"{PACKAGE}.modalities:write_graphs", f"{PACKAGE}.modalities:collate_graphs",
        ),
    ]


@hookimpl
def foundry_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            "shapes", "point_cloud", ShapesDataConfig, f"{PACKAGE}.data:load_shapes",
            "trimesh primitives (box, sphere, cylinder, capsule, cone, torus), random proportions and rotations, "
            "as point clouds, surface points or voxel grids; seeded",
        ),
        DatasetSpec(
            "mesh_folder", "point_cloud", MeshFolderDataConfig, f"{PACKAGE}.data:load_mesh_folder",
            ".ply/.obj/.off/.stl files under a folder, as point clouds, surface points or voxel grids",
        ),
        DatasetSpec(
            "graphs", "graph", GraphsDataConfig, f"{PACKAGE}.data:load_graphs",
            "synthetic networkx graphs (community, grid, tree, ego) as padded adjacency matrices; seeded",
        ),
        DatasetSpec(
            "graph_file", "graph", GraphFileDataConfig, f"{PACKAGE}.data:load_graph_file",
            'graphs from a JSON-lines file: {"num_nodes": N, "edges": [[i, j], ...]} per line',
        ),
    ]


@hookimpl
def foundry_metrics() -> list[MetricSpec]:
    return [
        MetricSpec(
            "shape_sample_quality", f"{PACKAGE}.metrics:shape_sample_quality", ("point_cloud", "mesh", "voxel"), ("sampling",),
            "MMD, coverage and 1-NNA of samples against held-out shapes (Chamfer; 1 - IoU for voxels)",
        ),
        MetricSpec(
            "graph_sample_quality", f"{PACKAGE}.metrics:graph_sample_quality", ("graph",), ("sampling",),
            "degree and clustering MMD of samples against held-out graphs, and of an Erdos-Renyi baseline",
        ),
    ]
