"""The four models: the symmetries they claim, masks, the template, samples' validity."""

from __future__ import annotations

import pytest
import torch
import trimesh

from model_foundry import FoundryError, create_model


def seeded(model, **batch):
    torch.manual_seed(0)
    return model(**batch)


def random_points(count: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, size, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("architecture, key", [("point_cloud", "points"), ("mesh", "surface_points")])
def test_point_encoders_are_permutation_invariant(architecture, key):
    model = create_model(architecture, preset="tiny").eval()
    points = random_points(3, 40)
    permuted = points[:, torch.randperm(40, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(permuted), model.encoder(points), rtol=0, atol=1e-6)
        assert not torch.allclose(model.encoder(points[:, :20]), model.encoder(points))  # and it sees the points
        torch.testing.assert_close(seeded(model, **{key: permuted}).loss, seeded(model, **{key: points}).loss)


def test_point_sets_of_different_sizes_are_padded_with_a_mask():
    model = create_model("point_cloud", preset="tiny").eval()
    small = random_points(1, 20)
    padded = torch.cat([small, torch.full((1, 12, 3), 50.0)], dim=1)
    mask = torch.tensor([[True] * 20 + [False] * 12])
    with torch.no_grad():
        torch.testing.assert_close(seeded(model, points=padded, point_mask=mask).loss, seeded(model, points=small).loss)
        torch.testing.assert_close(model.encode(padded, mask), model.encode(small))
        assert not torch.allclose(model.encode(padded), model.encode(small))  # without the mask the padding counts
    with pytest.raises(FoundryError, match=r"point_mask has shape \[1, 20\]; it must be \(N, P\) = \[1, 32\]"):
        model(points=padded, point_mask=mask[:, :20])
    with pytest.raises(FoundryError, match=r"takes 'points' of shape \(N, P, 3\), got \[1, 20, 2\]"):
        model(points=small[..., :2])


def test_emd_reconstruction_trains_and_refuses_padding():
    model = create_model("point_cloud", preset="tiny", reconstruction="emd")
    points = random_points(2, 32)
    loss = model(points=points).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.decoder.parameters())
    with pytest.raises(FoundryError, match="reconstruction emd matches sets of num_points"):
        model(points=points, point_mask=torch.ones(2, 32, dtype=torch.bool))


def test_mesh_zero_offsets_return_the_template_and_samples_keep_its_faces(tmp_path):
    model = create_model("mesh", preset="tiny")
    vertex_count = 10 * 4**1 + 2
    assert torch.equal(model.deform(torch.zeros(2, vertex_count, 3)), model.template.expand(2, -1, -1))
    assert trimesh.Trimesh(model.template.numpy(), model.faces.numpy(), process=False).is_watertight
    samples = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, vertex_count, 3)
    from foundry_plugin_geometric.modalities import write_meshes

    paths = write_meshes(samples, str(tmp_path / "mesh"))
    for path in paths[:2]:  # the first sample as .obj and as .ply
        loaded = trimesh.load(path, force="mesh", process=False)
        assert len(loaded.faces) == len(model.faces) and torch.allclose(torch.as_tensor(loaded.vertices).float(), samples[0], atol=1e-5)
        assert torch.equal(torch.as_tensor(loaded.faces), model.faces.long())
    assert sorted(p.rsplit(".", 1)[1] for p in paths) == ["npy", *["obj"] * 3, "ply", "ply", "ply", "png"]


def test_mesh_regularisers_are_zero_for_the_template_and_grow_with_offsets():
    model = create_model("mesh", preset="tiny")
    from foundry_plugin_geometric.geometry import uniform_laplacian

    offsets = torch.zeros(1, len(model.template), 3)
    assert uniform_laplacian(offsets, model.edges).abs().max() == 0
    bumped = offsets.clone()
    bumped[0, 0] = 0.3
    assert uniform_laplacian(bumped, model.edges).square().sum() > 0.05
    out = seeded(model, surface_points=random_points(2, 64))
    assert {"chamfer_loss", "laplacian_loss", "edge_loss", "kl_loss"} <= set(out)


def graph_batch(seed: int = 0, count: int = 4, size: int = 8):
    import networkx as nx

    adjacency = torch.stack([
        torch.as_tensor(nx.to_numpy_array(nx.gnp_random_graph(size, 0.4, seed=seed + i)), dtype=torch.float32) for i in range(count)
    ])
    return adjacency


def test_graph_model_is_permutation_equivariant():
    model = create_model("graph", preset="tiny").eval()
    adjacency = graph_batch()
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    permuted = adjacency[:, order][:, :, order]
    with torch.no_grad():
        latents, latents_permuted = model.encode(adjacency), model.encode(permuted)
        torch.testing.assert_close(latents_permuted, latents[:, order], rtol=0, atol=1e-6)
        assert not torch.allclose(latents[:, 0], latents[:, 1])  # nodes differ, so the check above is not vacuous
        probabilities = model.decode(latents)
        torch.testing.assert_close(model.decode(latents_permuted), probabilities[:, order][:, :, order], rtol=0, atol=1e-6)
        torch.testing.assert_close(probabilities, probabilities.transpose(1, 2))


def test_graph_samples_are_symmetric_with_an_empty_diagonal_and_trained_sizes():
    model = create_model("graph", preset="tiny")
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[:, :5] = True
    model(adjacency=graph_batch() * (mask[:, :, None] & mask[:, None, :]), node_mask=mask)  # training: counts sizes
    assert model.node_counts[5] == 4 and model.node_counts.sum() == 4
    samples = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (16, 8, 8) and set(samples.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(samples, samples.transpose(1, 2))
    assert samples.diagonal(dim1=1, dim2=2).abs().sum() == 0
    assert samples[:, 5:].abs().sum() == 0  # only graphs of 5 nodes were seen
    assert samples.sum() > 0


def test_graph_bad_inputs():
    model = create_model("graph", preset="tiny")
    with pytest.raises(FoundryError, match=r"up to 9 nodes .* set model.max_nodes to at least 9"):
        model(adjacency=torch.zeros(1, 9, 9))
    with pytest.raises(FoundryError, match="empty graph"):
        model(adjacency=torch.zeros(2, 8, 8), node_mask=torch.tensor([[True] * 8, [False] * 8]))
    small = model(adjacency=graph_batch(size=6))  # smaller graphs are padded
    assert torch.isfinite(small.loss)


def test_voxel_elbo_and_resolution_mismatch():
    model = create_model("voxel", preset="tiny")
    grids = (torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    out = seeded(model, voxels=grids)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.kl_loss)  # kl_weight 1: the negative ELBO
    torch.manual_seed(0)
    torch.testing.assert_close(-model.log_prob(voxels=grids).mean(), out.loss)
    with pytest.raises(FoundryError, match=r"built for grids \(N, 1, 8, 8, 8\) .* set model.resolution"):
        model(voxels=torch.zeros(1, 1, 16, 16, 16))
    samples = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 1, 8, 8, 8) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_unconditional_models_refuse_conditions():
    for architecture in ("point_cloud", "voxel", "mesh", "graph"):
        model = create_model(architecture, preset="tiny")
        with pytest.raises(FoundryError, match="unconditional"):
            model.sample(2, conditions=torch.zeros(2, dtype=torch.long))
