"""A variational graph autoencoder: the ``graph`` architecture.

Encoder: graph convolutions (H' = act(Â H W), Â = D^-1/2 (A + I) D^-1/2 over the real nodes)
from structural node features (a constant and the scaled degree), then per-node Gaussian
latents q(z_i | A). Decoder: edge (i, j) is a Bernoulli with logit MLP([z_i * z_j, (z_i - z_j)^2]),
symmetric in i and j by construction. Both are permutation-equivariant: relabelling the nodes
relabels the latents and the edge probabilities the same way. The loss per graph is the edges'
negative log-likelihood over the pairs i < j of real nodes plus ``kl_weight`` times the nodes' KL.

Sampling draws a node count from the sizes of the training graphs (counted in a buffer during
training, saved with the weights), node latents from N(0, I), and each edge i < j from its
Bernoulli, mirrored: adjacency matrices (N, max_nodes, max_nodes), symmetric with an empty
diagonal, padding nodes without edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_geometric.geometry import gaussian_kl
from foundry_plugin_geometric.layers import graph_batch, prior_draw, refuse_conditions, reparameterize
from model_foundry.plugin import MLP, FoundryModel, ModelConfig, ModelOutput


def normalized_adjacency(adjacency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Â = D^-1/2 (A + I) D^-1/2 restricted to real nodes (rows and columns of padding are zero)."""
    real = mask.float()
    with_loops = adjacency + torch.diag_embed(real)
    inverse_root = with_loops.sum(-1).clamp_min(1).rsqrt() * real
    return inverse_root.unsqueeze(-1) * with_loops * inverse_root.unsqueeze(-2)


class GraphEncoder(nn.Module):
    def __init__(self, hidden_dims: tuple[int, ...], latent_dim: int, max_nodes: int):
        super().__init__()
        widths = (2, *hidden_dims)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.head = nn.Linear(widths[-1], 2 * latent_dim)
        self.max_nodes = max_nodes

    def forward(self, adjacency: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        propagate = normalized_adjacency(adjacency, mask)
        degree = adjacency.sum(-1, keepdim=True) / self.max_nodes
        features = torch.cat([mask.float().unsqueeze(-1), degree], dim=-1)
        for layer in self.layers:
            features = F.silu(propagate @ layer(features))
        return self.head(features).chunk(2, dim=-1)


class EdgeDecoder(nn.Module):
    """Symmetric edge logits (N, n, n) from node latents (N, n, d)."""

    def __init__(self, latent_dim: int, hidden_dims: tuple[int, ...]):
        super().__init__()
        self.pair = MLP(2 * latent_dim, hidden_dims, 1, activation_name="silu")

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        left, right = latents.unsqueeze(-2), latents.unsqueeze(-3)
        return self.pair(torch.cat([left * right, (left - right).square()], dim=-1)).squeeze(-1)


class GraphModel(FoundryModel):
    """The model of the ``graph`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.params = params
        self.encoder = GraphEncoder(tuple(params.hidden_dims), params.latent_dim, params.max_nodes)
        self.decoder = EdgeDecoder(params.latent_dim, tuple(params.edge_dims))
        # How many training graphs had each node count 0..max_nodes (the sampler's size distribution).
        self.register_buffer("node_counts", torch.zeros(params.max_nodes + 1, dtype=torch.float64))

    def _pairs(self, mask: torch.Tensor) -> torch.Tensor:
        """(N, n, n) bool: the pairs i < j of real nodes."""
        upper = torch.ones(mask.shape[-1], mask.shape[-1], dtype=torch.bool, device=mask.device).triu(1)
        return upper & mask.unsqueeze(-1) & mask.unsqueeze(-2)

    def forward(
        self, adjacency: torch.Tensor | None = None, node_mask: torch.Tensor | None = None,
        node_labels: torch.Tensor | None = None, edge_labels: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """The negative ELBO of the graphs' structure; node and edge labels, if the data has them,
        are not modelled (``graph_rnn`` models them)."""
        adjacency, mask = graph_batch(self.architecture, adjacency, node_mask, self.params.max_nodes)
        if self.training:
            self.node_counts += torch.bincount(mask.sum(-1), minlength=len(self.node_counts)).to(self.node_counts)
        mean, log_variance = self.encoder(adjacency, mask)
        logits = self.decoder(reparameterize(mean, log_variance))
        pairs = self._pairs(mask).float()
        nll = (F.binary_cross_entropy_with_logits(logits, adjacency, reduction="none") * pairs).sum((-1, -2))
        kl = gaussian_kl(mean * mask.unsqueeze(-1), log_variance * mask.unsqueeze(-1))
        return ModelOutput(loss=(nll + self.params.kl_weight * kl).mean(), reconstruction_loss=nll.mean(), kl_loss=kl.mean())

    def encode(self, adjacency: torch.Tensor, node_mask: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Each node's posterior mean (N, max_nodes, latent_dim); zero for padding."""
        adjacency, mask = graph_batch(self.architecture, adjacency, node_mask, self.params.max_nodes)
        return self.encoder(adjacency, mask)[0] * mask.unsqueeze(-1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Node latents (N, n, d) -> edge probabilities (N, n, n), symmetric, zero on the diagonal."""
        probabilities = torch.sigmoid(self.decoder(latents))
        return probabilities * (1 - torch.eye(latents.shape[1], device=latents.device))

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """``num_samples`` adjacency matrices (N, max_nodes, max_nodes): 0/1, symmetric, empty diagonal."""
        refuse_conditions(self.architecture, conditions)
        limit, device = self.params.max_nodes, self.node_counts.device
        where = generator.device if generator is not None else device
        counts = self.node_counts.float().to(where)
        if counts.sum() == 0:  # an untrained model: graphs of every size up to max_nodes
            counts = torch.ones_like(counts).index_fill_(0, torch.tensor([0], device=where), 0)
        sizes = torch.multinomial(counts, num_samples, replacement=True, generator=generator)
        latents = prior_draw((num_samples, limit, self.params.latent_dim), generator, device)
        probabilities = self.decode(latents).to(where)
        draws = torch.rand(probabilities.shape, generator=generator, device=where) < probabilities
        mask = torch.arange(limit, device=where) < sizes.unsqueeze(-1)
        upper = self._pairs(mask) & draws
        return (upper | upper.transpose(-1, -2)).float().to(device)


def build(config: ModelConfig) -> GraphModel:
    return GraphModel(config)
