"""The autoregressive graph generator: the sequence encoding, causality, a normalised likelihood
that the sampler draws from, and training on community graphs."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch
from foundry_plugin_geometric.graph_rnn import adjacency_to_sequences, breadth_first_order, sequences_to_adjacency

from model_foundry import FoundryError, create_model


def adjacency_of(graphs: list[nx.Graph], size: int) -> torch.Tensor:
    matrices = [np.pad(nx.to_numpy_array(graph), (0, size - len(graph))) for graph in graphs]
    return torch.as_tensor(np.stack(matrices), dtype=torch.float32)


def test_sequences_encode_graphs_exactly():
    graphs = [nx.gnp_random_graph(7, 0.5, seed=seed) for seed in range(5)]
    adjacency = adjacency_of(graphs, 7)
    sequences = adjacency_to_sequences(adjacency)
    assert sequences.shape == (5, 7, 6)
    assert sequences[:, 0].sum() == 0  # the first node has no earlier one
    assert torch.equal(sequences[:, 3, :3], adjacency[:, 3, [2, 1, 0]])  # nearest earlier node first
    assert sequences[:, 3, 3:].sum() == 0
    assert torch.equal(sequences_to_adjacency(sequences), adjacency)


def test_breadth_first_order_covers_every_component():
    graph = nx.disjoint_union(nx.path_graph(4), nx.cycle_graph(5))  # two components
    matrix = nx.to_numpy_array(graph)
    rng = np.random.default_rng(0)
    for _ in range(10):
        order = breadth_first_order(matrix, 9, rng)
        assert sorted(order.tolist()) == list(range(9))
        for position, node in enumerate(order):  # a component's first node, or a neighbour of a node before it
            before = set(order[:position].tolist())
            assert set(graph[node]) & before or not nx.node_connected_component(graph, node) & before
    model = create_model("graph_rnn", preset="tiny")
    adjacency = adjacency_of([graph], 9)[:, :8, :8]
    index = model.order(adjacency, torch.ones(1, 8, dtype=torch.bool))[0]
    assert nx.is_isomorphic(nx.from_numpy_array(adjacency[0][index][:, index].numpy()), graph.subgraph(range(8)))


def test_logits_depend_only_on_what_came_before():
    """Causality by gradients: node t's label and stop logits read only the nodes before t; the
    logit of its edge S_t[k] reads those, its own label and S_t[<k]."""
    torch.manual_seed(0)
    model = create_model("graph_rnn", preset="tiny", node_labels=3, edge_labels=2).double()
    edges = torch.rand(1, 8, 7, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.rand(1, 8, 3, dtype=torch.float64, requires_grad=True)
    label_logits, stop_logits, edge_logits = model.logits(edges, labels)
    rows, columns = torch.arange(8).unsqueeze(1), torch.arange(7).unsqueeze(0)

    def gradients(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        edge_gradient, label_gradient = torch.autograd.grad(output, (edges, labels), retain_graph=True)
        return edge_gradient[0].abs().sum(-1), label_gradient[0].abs().sum(-1)

    for t, k in [(1, 0), (3, 0), (3, 2), (6, 4)]:
        on_edges, on_labels = gradients(edge_logits[0, t, k, 1])
        unread = (rows > t) | ((rows == t) & (columns >= k))
        assert on_edges[unread].max() == 0 and on_labels[t + 1 :].max() == 0
        assert on_labels[: t + 1].min() > 0  # every earlier label and its own
        assert k == 0 and t == 1 or on_edges[~unread].sum() > 0
        for output in (stop_logits[0, t], label_logits[0, t, 0]):
            on_edges, on_labels = gradients(output)
            assert on_edges[t:].max() == 0 and on_labels[t:].max() == 0
            assert on_labels[:t].min() > 0 and (t == 1 or on_edges[1:t].sum() > 0)


def every_graph(max_nodes: int, node_classes: int = 0, edge_classes: int = 0):
    """Every (typed adjacency, size, node labels) a model of ``max_nodes`` can emit."""
    values = range(1 + max(1, edge_classes))
    for size in range(1, max_nodes + 1):
        for edges in itertools.product(values, repeat=size * (size - 1) // 2):
            for labels in itertools.product(range(max(1, node_classes)), repeat=size):
                sequences = torch.zeros(1, max_nodes, max_nodes - 1, dtype=torch.long)
                position = 0
                for t in range(1, size):
                    sequences[0, t, :t] = torch.tensor(edges[position : position + t])
                    position += t
                yield sequences_to_adjacency(sequences), size, torch.tensor([[*labels, *[0] * (max_nodes - size)]])


def exact_distribution(model, outcomes):
    typed = torch.cat([typed for typed, _, _ in outcomes])
    sizes = torch.tensor([size for _, size, _ in outcomes])
    labels = torch.cat([labels for _, _, labels in outcomes]) if model.node_classes else None
    with torch.no_grad():
        return torch.exp(-sum(model.negative_log_likelihood(typed, sizes, labels)))


def test_likelihood_is_normalised_and_the_sampler_draws_from_it():
    torch.manual_seed(1)
    model = create_model("graph_rnn", preset="tiny", max_nodes=3).eval()
    outcomes = list(every_graph(3))
    assert len(outcomes) == 1 + 2 + 8
    probabilities = exact_distribution(model, outcomes)
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0), rtol=0, atol=1e-5)
    # A sample is an adjacency matrix: outcomes that differ only in trailing nodes without edges
    # look alike, so compare frequencies of matrices with the summed probability of their outcomes.
    samples = model.sample(10000, generator=torch.Generator().manual_seed(0))
    matrices = torch.cat([typed for typed, _, _ in outcomes]).float()
    for matrix in matrices.unique(dim=0):
        frequency = (samples == matrix).flatten(1).all(-1).float().mean()
        expected = probabilities[(matrices == matrix).flatten(1).all(-1)].sum()
        assert abs(frequency - expected) < 0.02


def test_labelled_likelihood_is_normalised_and_the_sampler_draws_from_it():
    """With two node labels and two edge types a 3-node model has 2 + 12 + 216 outcomes; the
    labels on the diagonal tell each sample's outcome exactly."""
    torch.manual_seed(2)
    model = create_model("graph_rnn", preset="tiny", max_nodes=3, node_labels=2, edge_labels=2).eval()
    with torch.no_grad():  # labels that matter: an untrained model's would move its edges less than the noise
        model.edge_start.weight[:, -2:] = torch.tensor([[4.0, -4.0]]).expand(model.edge_start.weight.shape[0], -1)
        model.edge_out.weight.mul_(4)
    outcomes = list(every_graph(3, node_classes=2, edge_classes=2))
    assert len(outcomes) == 2 + 12 + 216
    probabilities = exact_distribution(model, outcomes)
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0), rtol=0, atol=1e-5)
    samples = model.sample(20000, generator=torch.Generator().manual_seed(0))
    real = torch.arange(3) < torch.tensor([size for _, size, _ in outcomes]).unsqueeze(-1)
    matrices = torch.stack([typed[0] + torch.diag(((labels[0] + 1) * real[i]).float()) for i, (typed, _, labels) in enumerate(outcomes)])
    index = {tuple(matrix.flatten().tolist()): i for i, matrix in enumerate(matrices)}
    counts = torch.bincount(torch.tensor([index[tuple(sample.flatten().tolist())] for sample in samples]), minlength=len(outcomes))
    total_variation = 0.5 * (counts / len(samples) - probabilities).abs().sum()
    assert total_variation < 0.08  # sampling noise alone: about 0.03; a sampler that ignores labels: 0.29


def test_trains_on_community_graphs_and_samples_valid_graphs():
    torch.manual_seed(0)
    model = create_model("graph_rnn", preset="tiny", max_nodes=10)
    graphs = [nx.random_partition_graph([4, 4], 0.8, 0.05, seed=seed) for seed in range(16)]
    adjacency = adjacency_of(graphs, 10)
    mask = torch.zeros(16, 10, dtype=torch.bool)
    mask[:, :8] = True
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = model(adjacency=adjacency, node_mask=mask).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    samples = model.sample(64, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (64, 10, 10) and set(samples.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(samples, samples.transpose(1, 2)) and samples.diagonal(dim1=1, dim2=2).abs().sum() == 0
    assert samples[:, 8:].sum() < samples[:, :8].sum() * 0.1  # it learned the graphs' size


def test_bad_inputs():
    model = create_model("graph_rnn", preset="tiny")
    with pytest.raises(FoundryError, match=r"up to 9 nodes .* set model.max_nodes to at least 9"):
        model(adjacency=torch.zeros(1, 9, 9))
    with pytest.raises(FoundryError, match="empty graph"):
        model(adjacency=torch.zeros(2, 8, 8), node_mask=torch.tensor([[True] * 8, [False] * 8]))
    with pytest.raises(FoundryError, match="unconditional"):
        model.sample(2, conditions=torch.zeros(2))
