"""A VAE over point sets: the ``point_cloud`` architecture.

A PointNet encoder (one MLP shared by every point, a max over the points: invariant to their
order) gives q(z | X) = N(mean, diag(var)); an MLP decodes z into a set of ``num_points``
points. The loss per shape is ``D(decode(z), X) + kl_weight * KL(q || N(0, I))``, with D the
Chamfer distance (sets of any size; ``point_mask`` marks padding) or the exact earth mover's
distance (equal-size sets, optimal matching by scipy).
"""

from __future__ import annotations

import torch

from foundry_plugin_geometric.geometry import chamfer_distance, earth_movers_distance, gaussian_kl
from foundry_plugin_geometric.layers import PointNetEncoder, point_batch, prior_draw, refuse_conditions, reparameterize
from model_foundry.plugin import MLP, FoundryError, FoundryModel, ModelConfig, ModelOutput


class PointCloudModel(FoundryModel):
    """The model of the ``point_cloud`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.params = params
        self.encoder = PointNetEncoder(tuple(params.encoder_dims), 2 * params.latent_dim)
        self.decoder = MLP(params.latent_dim, tuple(params.decoder_dims), params.num_points * 3)

    def forward(
        self, points: torch.Tensor | None = None, point_mask: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        points = point_batch(self.architecture, "points", points, point_mask)
        mean, log_variance = self.encoder(points, point_mask).chunk(2, dim=-1)
        reconstruction = self.decode(reparameterize(mean, log_variance))
        distance = self.reconstruction_distance(reconstruction, points, point_mask)
        kl = gaussian_kl(mean, log_variance)
        return ModelOutput(
            loss=(distance + self.params.kl_weight * kl).mean(), reconstruction_loss=distance.mean(), kl_loss=kl.mean(),
        )

    def reconstruction_distance(self, reconstruction: torch.Tensor, points: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.params.reconstruction == "chamfer":
            return chamfer_distance(reconstruction, points, None, mask)
        if mask is not None or points.shape[1] != self.params.num_points:
            raise FoundryError(
                f"reconstruction emd matches sets of num_points ({self.params.num_points}) points, and the batch has "
                f"{points.shape[1]}{' with padding' if mask is not None else ''}; use reconstruction chamfer or "
                f"set model.num_points to the data's size"
            )
        return earth_movers_distance(reconstruction, points)

    def encode(self, points: torch.Tensor, point_mask: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean (N, latent_dim) of each set."""
        points = point_batch(self.architecture, "points", points, point_mask)
        return self.encoder(points, point_mask).chunk(2, dim=-1)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) -> point sets (N, num_points, 3)."""
        return self.decoder(latents).view(len(latents), self.params.num_points, 3)

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """``num_samples`` point sets (N, num_points, 3) decoded from prior draws."""
        refuse_conditions(self.architecture, conditions)
        device = next(self.parameters()).device
        return self.decode(prior_draw((num_samples, self.params.latent_dim), generator, device)).float()


def build(config: ModelConfig) -> PointCloudModel:
    return PointCloudModel(config)
