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
    ordered = model.ordered(adjacency_of([graph], 9)[:, :8, :8], torch.ones(1, 8, dtype=torch.bool))
    assert nx.is_isomorphic(nx.from_numpy_array(ordered[0].numpy()), graph.subgraph(range(8)))


def test_logits_depend_only_on_what_came_before():
    """Causality by gradients: the logit of S_t[k] reads S_<t and S_t[<k] only; the stop logit of
    node t reads S_<t only."""
    torch.manual_seed(0)
    model = create_model("graph_rnn", preset="tiny").double()
    sequences = torch.rand(1, 8, 7, dtype=torch.float64, requires_grad=True)
    stop_logits, edge_logits = model.sequence_logits(sequences)
    for t, k in [(1, 1), (3, 0), (3, 2), (6, 4)]:
        (gradient,) = torch.autograd.grad(edge_logits[0, t - 1, k], sequences, retain_graph=True)
        rows = torch.arange(8).unsqueeze(1)
        columns = torch.arange(7).unsqueeze(0)
        unread = (rows == 0) | (rows > t) | ((rows == t) & (columns >= k))  # S_0 is never an input
        assert gradient[0][unread].abs().max() == 0
        assert gradient[0][~unread].abs().sum() > 0
        (gradient,) = torch.autograd.grad(stop_logits[0, t - 1], sequences, retain_graph=True)
        assert gradient[0, 0].abs().max() == 0 and gradient[0, t:].abs().max() == 0
        assert t == 1 or gradient[0, 1:t].abs().sum() > 0


def every_graph_sequence(max_nodes: int):
    """Every (size, ordered adjacency) a model of ``max_nodes`` can emit."""
    for size in range(1, max_nodes + 1):
        bits = size * (size - 1) // 2
        for values in itertools.product((0.0, 1.0), repeat=bits):
            sequences = torch.zeros(1, max_nodes, max_nodes - 1)
            position = 0
            for t in range(1, size):
                sequences[0, t, :t] = torch.tensor(values[position : position + t])
                position += t
            yield size, sequences_to_adjacency(sequences)


def test_likelihood_is_normalised_and_the_sampler_draws_from_it():
    torch.manual_seed(1)
    model = create_model("graph_rnn", preset="tiny", max_nodes=3).eval()
    outcomes = list(every_graph_sequence(3))
    assert len(outcomes) == 1 + 2 + 8
    adjacency = torch.cat([a for _, a in outcomes])
    sizes = torch.tensor([size for size, _ in outcomes])
    with torch.no_grad():
        edge_nll, stop_nll = model.negative_log_likelihood(adjacency, sizes)
    probabilities = torch.exp(-(edge_nll + stop_nll))
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0), rtol=0, atol=1e-5)

    # A sample is an adjacency matrix: outcomes that differ only in trailing nodes without edges
    # look alike, so compare frequencies of matrices with the summed probability of their outcomes.
    samples = model.sample(10000, generator=torch.Generator().manual_seed(0))
    for matrix in adjacency.unique(dim=0):
        frequency = (samples == matrix).flatten(1).all(-1).float().mean()
        expected = probabilities[(adjacency == matrix).flatten(1).all(-1)].sum()
        assert abs(frequency - expected) < 0.02


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
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
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
