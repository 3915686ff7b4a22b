"""A 3-D convolutional VAE on occupancy grids: the ``voxel`` architecture.

The encoder halves the grid with each stride-2 convolution stage (``channels``), flattens and
maps to q(z | x) = N(mean, diag(var)); the decoder mirrors it with transposed convolutions to
one logit per cell. p(x | z) is a product of Bernoullis, so the loss is the negative ELBO in
nats per grid (``kl_weight`` 1), and ``log_prob`` a one-sample ELBO bound. Samples are the most
likely grid given a prior draw of z (cells whose probability exceeds 1/2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_geometric.geometry import gaussian_kl
from foundry_plugin_geometric.layers import prior_draw, refuse_conditions, reparameterize
from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput


class VoxelEncoder(nn.Module):
    def __init__(self, resolution: int, channels: tuple[int, ...], out_features: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for out in channels:
            layers += [nn.Conv3d(width, out, kernel_size=4, stride=2, padding=1), nn.GroupNorm(1, out), nn.SiLU()]
            width = out
        self.convolutions = nn.Sequential(*layers)
        side = resolution // 2 ** len(channels)
        self.head = nn.Linear(width * side**3, out_features)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        return self.head(self.convolutions(voxels).flatten(1))


class VoxelDecoder(nn.Module):
    def __init__(self, resolution: int, channels: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.side = resolution // 2 ** len(channels)
        self.width = channels[-1]
        self.project = nn.Linear(latent_dim, self.width * self.side**3)
        layers: list[nn.Module] = []
        widths = list(reversed(channels))
        for width, out in zip(widths, widths[1:], strict=False):
            layers += [nn.SiLU(), nn.ConvTranspose3d(width, out, kernel_size=4, stride=2, padding=1), nn.GroupNorm(1, out)]
        layers += [nn.SiLU(), nn.ConvTranspose3d(widths[-1], 1, kernel_size=4, stride=2, padding=1)]
        self.upsample = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        grid = self.project(latents).view(len(latents), self.width, self.side, self.side, self.side)
        return self.upsample(grid)


class VoxelModel(FoundryModel):
    """The model of the ``voxel`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.params = params
        self.encoder = VoxelEncoder(params.resolution, tuple(params.channels), 2 * params.latent_dim)
        self.decoder = VoxelDecoder(params.resolution, tuple(params.channels), params.latent_dim)

    def _checked(self, voxels: torch.Tensor | None) -> torch.Tensor:
        side = self.params.resolution
        if voxels is None:
            raise FoundryError(f"{self.architecture} needs a batch with 'voxels' (N, 1, {side}, {side}, {side})")
        if voxels.dim() != 5 or tuple(voxels.shape[1:]) != (1, side, side, side):
            raise FoundryError(
                f"{self.architecture} was built for grids (N, 1, {side}, {side}, {side}) (model.resolution {side}), "
                f"and the batch has {list(voxels.shape)}; set model.resolution to the data's grid side"
            )
        return voxels.float()

    def _terms(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per grid: the negative Bernoulli log-likelihood of a posterior draw, and the KL, (N,) each."""
        voxels = self._checked(voxels)
        mean, log_variance = self.encoder(voxels).chunk(2, dim=-1)
        logits = self.decoder(reparameterize(mean, log_variance))
        nll = F.binary_cross_entropy_with_logits(logits, voxels, reduction="none").flatten(1).sum(-1)
        return nll, gaussian_kl(mean, log_variance)

    def forward(self, voxels: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> ModelOutput:
        nll, kl = self._terms(voxels)
        return ModelOutput(loss=(nll + self.params.kl_weight * kl).mean(), reconstruction_loss=nll.mean(), kl_loss=kl.mean())

    def log_prob(self, voxels: torch.Tensor | None = None, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """A one-sample ELBO (N,), in nats: a lower bound on log p(x)."""
        nll, kl = self._terms(voxels)
        return -(nll + kl)

    def encode(self, voxels: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean (N, latent_dim) of each grid."""
        return self.encoder(self._checked(voxels)).chunk(2, dim=-1)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> cell probabilities (N, 1, D, D, D)."""
        return torch.sigmoid(self.decoder(latents))

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """``num_samples`` occupancy grids (N, 1, D, D, D) of 0/1: the most likely grid for each prior draw."""
        refuse_conditions(self.architecture, conditions)
        device = next(self.parameters()).device
        latents = prior_draw((num_samples, self.params.latent_dim), generator, device)
        return (self.decode(latents) > 0.5).float()


def build(config: ModelConfig) -> VoxelModel:
    return VoxelModel(config)
