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
Sampling runs the same steps with draws in place of the data: adjacency matrices (N, max_nodes,
max_nodes), symmetric with an empty diagonal, the nodes of each graph first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_geometric.layers import refuse_conditions
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
        width = params.max_nodes - 1  # S_t holds the edges to every earlier node
        self.embed = nn.Linear(width, params.embedding_size)
        self.graph_rnn = nn.GRU(params.embedding_size, params.hidden_size, params.num_layers, batch_first=True)
        self.stop = nn.Linear(params.hidden_size, 1)
        self.edge_start = nn.Linear(params.hidden_size, params.edge_hidden_size)
        self.edge_embed = nn.Linear(1, params.edge_embedding_size)
        self.edge_rnn = nn.GRU(params.edge_embedding_size, params.edge_hidden_size, batch_first=True)
        self.edge_out = nn.Linear(params.edge_hidden_size, 1)

    # --- the two recurrences, teacher-forced -------------------------------------------------

    def node_states(self, sequences: torch.Tensor) -> torch.Tensor:
        """States (N, n-1, H) for the nodes t = 1 .. n-1: node t's has read the start vector and S_1 .. S_{t-1}."""
        start = sequences.new_ones(sequences.shape[0], 1, sequences.shape[-1])
        inputs = torch.cat([start, sequences[:, 1:-1]], dim=1)
        states, _ = self.graph_rnn(F.relu(self.embed(inputs)))
        return states

    def edge_logits(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Logits of S_t[k] (N, n-1, n-1) for t = 1 .. n-1, each given node t's state and S_t[<k]
        (teacher forcing with ``targets`` = S_1 .. S_{n-1})."""
        count, steps, width = targets.shape
        previous = torch.cat([targets.new_ones(count, steps, 1), targets[..., :-1]], dim=-1)
        inputs = F.relu(self.edge_embed(previous.reshape(count * steps, width, 1)))
        start = torch.tanh(self.edge_start(states)).reshape(1, count * steps, -1)
        outputs, _ = self.edge_rnn(inputs, start.contiguous())
        return self.edge_out(outputs).reshape(count, steps, width)

    def sequence_logits(self, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From sequences (N, n, n-1) in node order, for the nodes t = 1 .. n-1: logits (N, n-1) of
        "node t does not exist" and logits (N, n-1, n-1) of its edges S_t."""
        states = self.node_states(sequences)
        return self.stop(states).squeeze(-1), self.edge_logits(states, sequences[:, 1:])

    # --- training ----------------------------------------------------------------------------

    def _checked(self, adjacency: torch.Tensor | None, node_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        limit = self.params.max_nodes
        if adjacency is None:
            raise FoundryError(f"{self.architecture} needs a batch with 'adjacency' (N, n, n)")
        if adjacency.dim() != 3 or adjacency.shape[1] != adjacency.shape[2]:
            raise FoundryError(f"{self.architecture} takes 'adjacency' of shape (N, n, n), got {list(adjacency.shape)}")
        if adjacency.shape[1] > limit:
            raise FoundryError(
                f"the batch's graphs have up to {adjacency.shape[1]} nodes and the model holds {limit} "
                f"(model.max_nodes); set model.max_nodes to at least {adjacency.shape[1]}"
            )
        mask = torch.ones(adjacency.shape[:2], dtype=torch.bool, device=adjacency.device) if node_mask is None else node_mask.bool()
        if not bool(mask.any(-1).all()):
            raise FoundryError("the batch holds an empty graph (a node_mask row without nodes); every graph needs nodes")
        padding = limit - adjacency.shape[1]
        return F.pad(adjacency.float(), (0, padding, 0, padding)), F.pad(mask, (0, padding))

    def ordered(self, adjacency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each graph's real nodes relabelled in a random breadth-first order, padding after them."""
        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # from torch's generator: resumable
        rng = np.random.default_rng(seed)
        matrices = adjacency.detach().cpu().numpy()
        sizes = mask.sum(-1).tolist()
        permutations = []
        for matrix, size in zip(matrices, sizes, strict=True):
            order = breadth_first_order(matrix, int(size), rng)
            permutations.append(np.concatenate([order, np.arange(size, matrix.shape[0])]))
        index = torch.as_tensor(np.stack(permutations), device=adjacency.device)
        rows = adjacency.gather(1, index.unsqueeze(-1).expand_as(adjacency))
        return rows.gather(2, index.unsqueeze(1).expand_as(adjacency))

    def negative_log_likelihood(self, ordered: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per graph: the nats of its edges and of its node count, under the order of ``ordered``."""
        sequences = adjacency_to_sequences(ordered)
        stop_logits, edge_logits = self.sequence_logits(sequences)
        t = torch.arange(1, self.params.max_nodes, device=ordered.device).unsqueeze(0)  # the nodes 1 .. n-1
        exists = (t < sizes.unsqueeze(1)).float()
        asked = (t <= sizes.unsqueeze(1)).float()  # the real nodes, and the first missing one (the stop)
        stop_nll = (F.binary_cross_entropy_with_logits(stop_logits, 1 - exists, reduction="none") * asked).sum(-1)
        earlier = (torch.arange(self.params.max_nodes - 1, device=ordered.device).unsqueeze(0) < t.T).float()  # k < t
        pairs = exists.unsqueeze(-1) * earlier.unsqueeze(0)
        edge_nll = (F.binary_cross_entropy_with_logits(edge_logits, sequences[:, 1:], reduction="none") * pairs).sum((-1, -2))
        return edge_nll, stop_nll

    def forward(
        self, adjacency: torch.Tensor | None = None, node_mask: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        adjacency, mask = self._checked(adjacency, node_mask)
        edge_nll, stop_nll = self.negative_log_likelihood(self.ordered(adjacency, mask), mask.sum(-1))
        return ModelOutput(loss=(edge_nll + stop_nll).mean(), edge_loss=edge_nll.mean(), size_loss=stop_nll.mean())

    # --- sampling ----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """``num_samples`` adjacency matrices (N, max_nodes, max_nodes): 0/1, symmetric, empty diagonal."""
        refuse_conditions(self.architecture, conditions)
        limit, device = self.params.max_nodes, self.embed.weight.device
        where = generator.device if generator is not None else device

        def bernoulli(logits: torch.Tensor) -> torch.Tensor:
            return (torch.rand(logits.shape, generator=generator, device=where) < torch.sigmoid(logits).to(where)).float().to(device)

        sequences = torch.zeros(num_samples, limit, limit - 1, device=device)
        alive = torch.ones(num_samples, dtype=torch.bool, device=device)
        previous = torch.ones(num_samples, 1, limit - 1, device=device)
        hidden = None
        for t in range(1, limit):
            state, hidden = self.graph_rnn(F.relu(self.embed(previous)), hidden)
            alive &= bernoulli(self.stop(state[:, 0]).squeeze(-1)) == 0
            edge_hidden = torch.tanh(self.edge_start(state[:, 0])).unsqueeze(0).contiguous()
            edge = torch.ones(num_samples, 1, 1, device=device)
            for k in range(t):
                output, edge_hidden = self.edge_rnn(F.relu(self.edge_embed(edge)), edge_hidden)
                edge = bernoulli(self.edge_out(output)).reshape(num_samples, 1, 1)
                sequences[:, t, k] = edge.flatten() * alive
            previous = sequences[:, t : t + 1]
            if not bool(alive.any()):
                break
        return sequences_to_adjacency(sequences)


def build(config: ModelConfig) -> GraphRNNModel:
    return GraphRNNModel(config)
