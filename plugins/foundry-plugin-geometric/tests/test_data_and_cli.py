"""Dataset kinds, modalities' collators and writers, and bad input through the command line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import trimesh
from foundry_plugin_geometric.config import GraphsDataConfig, MeshFolderDataConfig, ShapesDataConfig
from foundry_plugin_geometric.data import load_graphs, load_mesh_folder, load_shapes
from foundry_plugin_geometric.modalities import collate_graphs, collate_voxels, write_graphs, write_voxels

from model_foundry import cli
from model_foundry.datasets import DataContext
from model_foundry.errors import ConfigError

CONTEXT = DataContext(cache_dir="unused")


def run_cli(*args: str) -> int:
    return cli.main(list(args))


def test_shapes_are_seeded_labelled_and_in_the_unit_ball():
    config = ShapesDataConfig(shapes=["box", "torus"], num_examples=20, num_points=64, validation_fraction=0.25)
    first, again = load_shapes(config, CONTEXT), load_shapes(config, CONTEXT)
    assert first.modality == "point_cloud" and len(first.train) == 15 and len(first.validation) == 5
    batch = first.train.batch(range(15))
    assert batch["points"].shape == (15, 64, 3) and torch.equal(batch["points"], again.train.batch(range(15))["points"])
    assert set(batch["class_labels"].tolist()) == {0, 1} and first.info["num_classes"] == 2
    assert batch["points"].norm(dim=-1).max() <= 0.95 + 1e-5
    other = load_shapes(ShapesDataConfig(shapes=["box", "torus"], num_examples=20, num_points=64, seed=1), CONTEXT)
    assert not torch.equal(other.train.batch([0])["points"], batch["points"][:1])


def test_shapes_as_voxels_and_surface_points():
    voxels = load_shapes(ShapesDataConfig(modality="voxel", num_examples=6, resolution=8, validation_fraction=0), CONTEXT)
    grids = voxels.train.batch(range(6))["voxels"]
    assert voxels.modality == "voxel" and grids.shape == (6, 1, 8, 8, 8) and (grids.flatten(1).sum(1) > 0).all()
    mesh = load_shapes(ShapesDataConfig(modality="mesh", num_examples=4, num_points=32, validation_fraction=0), CONTEXT)
    assert mesh.modality == "mesh" and mesh.train.batch(range(4))["surface_points"].shape == (4, 32, 3)


def test_synthetic_graph_families():
    for family in ("community", "grid", "tree", "ego"):
        loaded = load_graphs(GraphsDataConfig(family=family, num_graphs=10, min_nodes=6, max_nodes=12), CONTEXT)
        batch = loaded.train.batch(range(len(loaded.train)))
        adjacency, mask = batch["adjacency"], batch["node_mask"]
        sizes = mask.sum(1)
        assert adjacency.shape[1:] == (12, 12) and torch.equal(adjacency, adjacency.transpose(1, 2))
        assert adjacency.diagonal(dim1=1, dim2=2).sum() == 0 and (sizes <= 12).all()
        assert family == "ego" or (sizes >= 6).all()  # an ego graph has as many nodes as its neighbourhood
        if family == "tree":
            assert torch.equal(adjacency.sum((1, 2)) / 2, (sizes - 1).float())  # a tree on n nodes has n - 1 edges


def test_collators_make_valid_data():
    voxels = collate_voxels()({"voxels": torch.tensor([0.2, 0.7, 1.0]).view(1, 1, 3, 1, 1)})["voxels"]
    assert voxels.flatten().tolist() == [0.0, 1.0, 1.0]
    adjacency = torch.tensor([[[1.0, 1, 0], [0, 0, 1], [0, 0, 0]]])
    out = collate_graphs()({"adjacency": adjacency, "node_mask": torch.tensor([[True, True, False]])})
    assert out["adjacency"].tolist() == [[[0, 1, 0], [1, 0, 0], [0, 0, 0]]]
    assert collate_graphs()({"adjacency": adjacency})["node_mask"].all()


def test_writers(tmp_path):
    paths = write_voxels(torch.ones(2, 1, 4, 4, 4), str(tmp_path / "grids"))
    assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "npy"] and np.load(paths[1]).shape == (2, 1, 4, 4, 4)
    path_graph = torch.diag(torch.ones(4), 1) + torch.diag(torch.ones(4), -1)
    paths = write_graphs(path_graph.expand(3, 5, 5), str(tmp_path / "graphs"))
    assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "jsonl", "npy"]
    with pytest.raises(ValueError, match=r"square adjacency matrices"):
        write_graphs(torch.zeros(2, 3, 4), str(tmp_path / "bad"))


def test_mesh_folder_reads_meshes_and_names_bad_files(tmp_path):
    folder = tmp_path / "meshes"
    (folder / "boxes").mkdir(parents=True)
    (folder / "spheres").mkdir()
    trimesh.creation.box().export(folder / "boxes" / "a.ply")
    trimesh.creation.icosphere(subdivisions=1).export(folder / "spheres" / "b.off")
    trimesh.creation.icosphere(subdivisions=1).export(folder / "spheres" / "c.obj")
    config = MeshFolderDataConfig(path=str(folder), num_points=16, labels_from_folders=True, validation_fraction=0)
    loaded = load_mesh_folder(config, CONTEXT)
    assert loaded.train.batch(range(3))["points"].shape == (3, 16, 3) and loaded.info["class_names"] == ["boxes", "spheres"]
    grids = load_mesh_folder(MeshFolderDataConfig(path=str(folder), modality="voxel", resolution=8, validation_fraction=0), CONTEXT)
    assert grids.train.batch([0])["voxels"].sum() > 0

    open_box = trimesh.creation.box()
    open_box.update_faces(np.arange(len(open_box.faces)) > 1)  # two triangles removed: a hole
    open_box.export(folder / "boxes" / "open.ply")
    with pytest.raises(ConfigError, match=r"open.ply' is not a closed manifold surface"):
        load_mesh_folder(MeshFolderDataConfig(path=str(folder), modality="voxel", resolution=8), CONTEXT)
    (folder / "boxes" / "broken.obj").write_text("this is not a mesh\n")
    with pytest.raises(ConfigError, match=r"broken.obj' (is not a readable mesh|holds no triangles)"):
        load_mesh_folder(config, CONTEXT)


@pytest.mark.parametrize(
    "model, data, message",
    [
        ("  architecture: voxel\n  resolution: 20\n", "  kind: shapes\n  modality: voxel\n",
         r"bad.yaml:3:15: model.resolution: 20 does not fit 3 stride-2 stages \(it must be divisible by 8\)"),
        ("  architecture: point_cloud\n", "  kind: shapes\n  shapes: [box, pyramid]\n",
         r"bad.yaml:5:11: data.shapes: unknown primitive\(s\) \['pyramid'\]"),
        ("  architecture: graph\n", "  kind: graphs\n  min_nodes: 10\n  max_nodes: 5\n",
         r"bad.yaml:6:14: data.max_nodes: must be >= min_nodes \(10\), got 5"),
        ("  architecture: mesh\n  subdivisions: 7\n", "  kind: shapes\n  modality: mesh\n",
         r"bad.yaml:3:17: model.subdivisions: must be between 0 and 5, got 7"),
        ("  architecture: voxel\n", "  kind: graphs\n", r"data.*graph"),
    ],
)
def test_bad_configs_are_located_errors_with_exit_code_2(tmp_path, capsys, model, data, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n{model}data:\n{data}")
    assert run_cli("validate", str(path)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(message, err), err


def test_bad_data_files_stop_training_with_exit_code_2(tmp_path, capsys):
    graphs = tmp_path / "graphs.jsonl"
    graphs.write_text(json.dumps({"num_nodes": 3, "edges": [[0, 1]]}) + "\n" + json.dumps({"num_nodes": 0, "edges": []}) + "\n")
    config = tmp_path / "graph.yaml"
    config.write_text(
        f"model:\n  architecture: graph\n  preset: tiny\ndata:\n  kind: graph_file\n  path: {graphs}\n"
        f"training:\n  max_steps: 1\n  output_dir: {tmp_path / 'run'}\n"
    )
    assert run_cli("train", str(config)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(r"graphs.jsonl:2: an empty graph \(num_nodes 0\)", err), err
    graphs.write_text(json.dumps({"num_nodes": 3, "edges": [[0, 5]]}) + "\n")
    assert run_cli("train", str(config)) == 2
    assert re.search(r"graphs.jsonl:1: edges \[\(0, 5\)\] name nodes outside 0..2", capsys.readouterr().err)
