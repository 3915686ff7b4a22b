"""An autoregressive graph generator (GraphRNN, You et al. 2018): the ``graph_rnn`` architecture.

A graph is read as a sequence of nodes in breadth-first order (from a random start node, and a
random unvisited node again where a component ends), each node ``t`` with its adjacency vector
``S_t`` to the nodes before it, nearest first: ``S_t[k] = A[t, t-1-k]``. A graph-level GRU reads a start
vector of ones and ``S_1 .. S_{t-1}`` and gives a state ``h_t``; from it a head
predicts whether node ``t`` exists (otherwise the graph ends with ``t`` nodes) and an edge-level
GRU, started from ``h_t``, predicts ``S_t[0], S_t[1], ...`` one after another, each given the ones
before it. So

    log p(graph, order) = sum_t [ log p(continue_t | S_<t) + sum_k log p(S_t[k] | S_t[<k], S_<t) ]
                          + log p(stop_n | S_<n)

and the training loss is its negative per graph (nats), under a fresh random order at every step.

Labels are optional (``node_labels``, ``edge_labels``: numbers of classes). With edge labels an
entry of ``S_t`` is a class (0 no edge, c an edge of type c - 1) drawn from a softmax; with node
labels, node t's label is drawn from the graph-level state before its edges, and both the
edge-level GRU and the next step read it: log p(label_t | nodes < t) joins the sum.

Sampling runs the same steps with draws in place of the data: typed adjacency matrices (N,
max_nodes, max_nodes), symmetric, the nodes of each graph first, 1 + the edge type where there is
an edge (0/1 for unlabelled graphs) and, with node labels, 1 + each node's label on the diagonal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_geometric.layers import graph_batch, refuse_conditions
from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput


def breadth_first_order(adjacency: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``size`` nodes of ``adjacency`` in breadth-first order from a random start node;
    where a component is exhausted, the search restarts at a random unvisited node."""
    order: list[int] = []
    seen = np.zeros(size, dtype=bool)
    while len(order) < size:
        start = int(rng.choice(np.flatnonzero(~seen)))
        seen[start] = True
        queue = [start]
        while queue:
            node = queue.pop(0)
            order.append(node)
            neighbours = np.flatnonzero((adjacency[node, :size] > 0) & ~seen)
            seen[neighbours] = True
            queue.extend(int(n) for n in rng.permutation(neighbours))
    return np.asarray(order)


def adjacency_to_sequences(adjacency: torch.Tensor) -> torch.Tensor:
    """(N, n, n) adjacency in node order -> (N, n, n-1) vectors ``S_t[k] = A[t, t-1-k]`` (zero for k >= t)."""
    size = adjacency.shape[-1]
    t = torch.arange(size).unsqueeze(1)
    earlier = t - 1 - torch.arange(size - 1).unsqueeze(0)
    valid = (earlier >= 0).to(adjacency)
    gathered = adjacency.gather(-1, earlier.clamp_min(0).expand(adjacency.shape[0], -1, -1).to(adjacency.device))
    return gathered * valid.to(adjacency.device)


def sequences_to_adjacency(sequences: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`adjacency_to_sequences`: (N, n, n-1) -> (N, n, n), symmetric, empty diagonal."""
    count, size = sequences.shape[0], sequences.shape[1]
    adjacency = sequences.new_zeros(count, size, size)
    for t in range(1, size):
        adjacency[:, t, :t] = sequences[:, t, :t].flip(-1)
    return adjacency + adjacency.transpose(-1, -2)


class GraphRNNModel(FoundryModel):
    """The model of the ``graph_rnn`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = self.params = config.params
        # An edge value is a class: 0 no edge, c an edge of type c - 1 (one type for unlabelled graphs).
        self.edge_classes = 1 + max(1, params.edge_labels)
        self.node_classes = params.node_labels
        step_width = (params.max_nodes - 1) * (self.edge_classes - 1) + self.node_classes
        self.embed = nn.Linear(step_width, params.embedding_size)
        self.graph_rnn = nn.GRU(params.embedding_size, params.hidden_size, params.num_layers, batch_first=True)
        # The stop head also reads the node's index (one-hot), so a size distribution need not be
        # counted out by the GRU.
        self.stop = nn.Linear(params.hidden_size + params.max_nodes, 1)
        self.node_label = nn.Linear(params.hidden_size, self.node_classes) if self.node_classes else None
        self.edge_start = nn.Linear(params.hidden_size + self.node_classes, params.edge_hidden_size)
        self.edge_embed = nn.Linear(self.edge_classes + 1, params.edge_embedding_size)  # the previous edge's class, or "start"
        self.edge_rnn = nn.GRU(params.edge_embedding_size, params.edge_hidden_size, batch_first=True)
        self.edge_out = nn.Linear(params.edge_hidden_size, self.edge_classes)

    # --- the two recurrences, teacher-forced -------------------------------------------------

    def step_features(self, edges: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """What the graph-level GRU reads of node t: its edges to the earlier nodes, one-hot without
        the "no edge" class (N, n, (n-1)(C-1)), and its label, one-hot (N, n, L)."""
        parts = [edges[..., 1:].flatten(2)]
        return torch.cat([*parts, labels], dim=-1) if labels is not None else parts[0]

    def logits(
        self, edges: torch.Tensor, labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Teacher-forced logits from one-hot edges (N, n, n-1, C) and one-hot node labels (N, n, L):
        for every node t, its label's (N, n, L; None without labels), "node t does not exist"
        (N, n; asked from t = 1) and its edges' (N, n, n-1, C). Node t's label and existence read
        the nodes before t; its edge S_t[k] also reads its label and S_t[<k]."""
        features = self.step_features(edges, labels)
        start = features.new_ones(features.shape[0], 1, features.shape[-1])
        states, _ = self.graph_rnn(F.relu(self.embed(torch.cat([start, features[:, :-1]], dim=1))))
        label_logits = self.node_label(states) if self.node_label is not None else None
        count, size, width, classes = edges.shape
        begin = F.one_hot(torch.full((count, size, 1), classes, device=edges.device), classes + 1).to(edges)
        previous = torch.cat([begin, F.pad(edges[:, :, :-1], (0, 1))], dim=2)
        inputs = F.relu(self.edge_embed(previous.reshape(count * size, width, classes + 1)))
        first = torch.cat([states, labels], dim=-1) if labels is not None else states
        hidden = torch.tanh(self.edge_start(first)).reshape(1, count * size, -1).contiguous()
        outputs, _ = self.edge_rnn(inputs, hidden)
        return label_logits, self.stop_logits(states), self.edge_out(outputs).reshape(count, size, width, classes)

    def stop_logits(self, states: torch.Tensor) -> torch.Tensor:
        """(N, n) logits of "node t does not exist" from the states (N, n, H) of nodes 0 .. n-1."""
        positions = torch.eye(self.params.max_nodes, device=states.device)[: states.shape[1]].expand(states.shape[0], -1, -1)
        return self.stop(torch.cat([states, positions.to(states)], dim=-1)).squeeze(-1)

    # --- training ----------------------------------------------------------------------------

    def _checked(
        self, adjacency: torch.Tensor | None, node_mask: torch.Tensor | None,
        node_labels: torch.Tensor | None, edge_labels: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Typed adjacency (0 no edge, c an edge of class c), padded to max_nodes, the node mask and
        the node labels (None for a model without them)."""
        adjacency, mask = graph_batch(self.architecture, adjacency, node_mask, self.params.max_nodes)
        edges = adjacency > 0
        typed = edges.long()
        if self.params.edge_labels:
            typed = typed * (self._labels("edge_labels", edge_labels, self.params.edge_labels, edges) + 1)
        labels = self._labels("node_labels", node_labels, self.node_classes, mask) if self.node_classes else None
        return typed, mask, labels

    def _labels(self, key: str, values: torch.Tensor | None, classes: int, where: torch.Tensor) -> torch.Tensor:
        """``values`` checked against ``classes``, padded like ``where`` and zero outside it."""
        if values is None:
            raise FoundryError(
                f"model.{key} is {classes} but the batch has no {key!r}; use data with {key.replace('_', ' ')} "
                f"or set model.{key}: 0"
            )
        values = F.pad(values.long(), (0, where.shape[-1] - values.shape[-1]) * (values.dim() - 1)) * where
        if bool((values < 0).any()) or bool((values >= classes).any()):
            raise FoundryError(f"the batch has {key} {values.min().item()}..{values.max().item()}; model.{key} is {classes} (labels 0..{classes - 1})")
        return values

    def order(self, adjacency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, max_nodes) a random breadth-first order of each graph's real nodes, padding after them."""
        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # from torch's generator: resumable
        rng = np.random.default_rng(seed)
        matrices = (adjacency > 0).cpu().numpy()
        permutations = []
        for matrix, size in zip(matrices, mask.sum(-1).tolist(), strict=True):
            order = breadth_first_order(matrix, int(size), rng)
            permutations.append(np.concatenate([order, np.arange(size, matrix.shape[0])]))
        return torch.as_tensor(np.stack(permutations), device=adjacency.device)

    def negative_log_likelihood(
        self, typed: torch.Tensor, sizes: torch.Tensor, labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per graph: the nats of its edges, of its node count and of its node labels, in the node
        order of ``typed`` (N, n, n) and ``labels`` (N, n)."""
        limit = self.params.max_nodes
        sequences = adjacency_to_sequences(typed)
        one_hot_labels = F.one_hot(labels, self.node_classes).float() if labels is not None else None
        label_logits, stop_logits, edge_logits = self.logits(F.one_hot(sequences, self.edge_classes).float(), one_hot_labels)
        t = torch.arange(limit, device=typed.device).unsqueeze(0)
        exists = t < sizes.unsqueeze(1)
        asked = (t <= sizes.unsqueeze(1)) & (t >= 1)  # nodes 1 .. n-1, and the first missing one (the stop)
        stop_nll = (F.binary_cross_entropy_with_logits(stop_logits, (~exists).float(), reduction="none") * asked).sum(-1)
        earlier = torch.arange(limit - 1, device=typed.device).unsqueeze(0) < t.T  # (n, n-1): k < t
        pairs = exists.unsqueeze(-1) & earlier
        edge_nll = F.cross_entropy(edge_logits.flatten(0, 2), sequences.flatten(), reduction="none").view_as(sequences)
        edge_nll = (edge_nll * pairs).sum((-1, -2))
        label_nll = torch.zeros_like(edge_nll)
        if labels is not None:
            label_nll = (F.cross_entropy(label_logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels) * exists).sum(-1)
        return edge_nll, stop_nll, label_nll

    def forward(
        self, adjacency: torch.Tensor | None = None, node_mask: torch.Tensor | None = None,
        node_labels: torch.Tensor | None = None, edge_labels: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        typed, mask, labels = self._checked(adjacency, node_mask, node_labels, edge_labels)
        index = self.order(typed, mask)
        typed = typed.gather(1, index.unsqueeze(-1).expand_as(typed)).gather(2, index.unsqueeze(1).expand_as(typed))
        if labels is not None:
            labels = labels.gather(1, index)
        edge_nll, stop_nll, label_nll = self.negative_log_likelihood(typed, mask.sum(-1), labels)
        losses = {"edge_loss": edge_nll.mean(), "size_loss": stop_nll.mean()}
        if labels is not None:
            losses["label_loss"] = label_nll.mean()
        return ModelOutput(loss=(edge_nll + stop_nll + label_nll).mean(), **losses)

    # --- sampling ----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """``num_samples`` graphs as typed adjacency matrices (N, max_nodes, max_nodes), the nodes of
        each graph first: symmetric, 0 where there is no edge, 1 + the edge's type where there is
        one (1 for unlabelled edges); the diagonal holds 1 + each node's label for a model with
        node labels (so it also tells the node count), and is empty otherwise."""
        refuse_conditions(self.architecture, conditions)
        limit, device = self.params.max_nodes, self.embed.weight.device
        where = generator.device if generator is not None else device

        def draw(logits: torch.Tensor) -> torch.Tensor:
            probabilities = torch.softmax(logits.float(), dim=-1).to(where)
            return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1).to(device)

        sequences = torch.zeros(num_samples, limit, limit - 1, dtype=torch.long, device=device)
        labels = torch.zeros(num_samples, limit, dtype=torch.long, device=device)
        sizes = torch.ones(num_samples, dtype=torch.long, device=device)
        alive = torch.ones(num_samples, dtype=torch.bool, device=device)
        features = torch.ones(num_samples, 1, self.embed.in_features, device=device)
        hidden = None
        for t in range(limit):
            state, hidden = self.graph_rnn(F.relu(self.embed(features)), hidden)
            state = state[:, 0]
            if t >= 1:
                stop_logit = self.stop(torch.cat([state, F.one_hot(torch.full((num_samples,), t, device=device), limit).to(state)], -1))
                stop = torch.rand(num_samples, generator=generator, device=where) < torch.sigmoid(stop_logit).squeeze(-1).to(where)
                alive &= ~stop.to(device)
                sizes += alive.long()
            label = None
            if self.node_label is not None:
                labels[:, t] = draw(self.node_label(state)) * alive
                label = F.one_hot(labels[:, t], self.node_classes).float()
            edge_hidden = torch.tanh(self.edge_start(torch.cat([state, label], -1) if label is not None else state))
            edge_hidden = edge_hidden.unsqueeze(0).contiguous()
            previous = torch.full((num_samples, 1), self.edge_classes, device=device)
            for k in range(t):
                output, edge_hidden = self.edge_rnn(F.relu(self.edge_embed(F.one_hot(previous, self.edge_classes + 1).float())), edge_hidden)
                value = draw(self.edge_out(output[:, 0]))
                sequences[:, t, k] = value * alive
                previous = value.unsqueeze(-1)
            if t >= 1 and not bool(alive.any()):
                break
            step_labels = label.unsqueeze(1) if label is not None else None
            features = self.step_features(F.one_hot(sequences[:, t : t + 1], self.edge_classes).float(), step_labels)
        typed = sequences_to_adjacency(sequences).float()
        if self.node_label is not None:
            real = torch.arange(limit, device=device) < sizes.unsqueeze(-1)
            typed = typed + torch.diag_embed(((labels + 1) * real).float())
        return typed


def build(config: ModelConfig) -> GraphRNNModel:
    return GraphRNNModel(config)
