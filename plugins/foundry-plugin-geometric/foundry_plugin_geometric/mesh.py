"""Template deformation: the ``mesh`` architecture.

A PointNet encoder reads points sampled on a target surface (the ``mesh`` modality's
``surface_points``) into q(z | X); an MLP decodes z into one offset per vertex of an icosphere
template, and the sample is the template moved by them (the template's faces stay). The loss
per shape is

    Chamfer(vertices, X) + laplacian_weight * mean |L(offsets)|^2 + edge_weight * mean |edge|^2
    + kl_weight * KL(q || N(0, I))

with L the uniform Laplacian of the template (a smooth deformation has a small Laplacian) and
the edge term keeping triangles from stretching (as in Pixel2Mesh). The decoder's last layer
starts at 1% of its usual scale, so an untrained model returns shapes close to the template.
"""

from __future__ import annotations

import torch

from foundry_plugin_geometric.geometry import (
    chamfer_distance,
    edge_lengths_squared,
    gaussian_kl,
    icosphere,
    uniform_laplacian,
    unique_edges,
)
from foundry_plugin_geometric.layers import PointNetEncoder, point_batch, prior_draw, refuse_conditions, reparameterize
from model_foundry.plugin import MLP, FoundryModel, ModelConfig, ModelOutput

INITIAL_OFFSET_SCALE = 0.01


class MeshModel(FoundryModel):
    """The model of the ``mesh`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.params = params
        vertices, faces = icosphere(params.subdivisions, params.template_radius)
        self.register_buffer("template", torch.as_tensor(vertices, dtype=torch.float32))
        self.register_buffer("faces", torch.as_tensor(faces, dtype=torch.long))
        self.register_buffer("edges", torch.as_tensor(unique_edges(faces), dtype=torch.long))
        self.encoder = PointNetEncoder(tuple(params.encoder_dims), 2 * params.latent_dim)
        self.decoder = MLP(params.latent_dim, tuple(params.decoder_dims), len(vertices) * 3)
        with torch.no_grad():  # start near the template: offsets of about 1% of their default scale
            self.decoder[-1].weight.mul_(INITIAL_OFFSET_SCALE)
            self.decoder[-1].bias.zero_()

    def deform(self, offsets: torch.Tensor) -> torch.Tensor:
        """The template's vertices moved by ``offsets`` (N, V, 3)."""
        return self.template + offsets

    def forward(
        self, surface_points: torch.Tensor | None = None, point_mask: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        points = point_batch(self.architecture, "surface_points", surface_points, point_mask)
        mean, log_variance = self.encoder(points, point_mask).chunk(2, dim=-1)
        offsets = self.offsets(reparameterize(mean, log_variance))
        vertices = self.deform(offsets)
        distance = chamfer_distance(vertices, points, None, point_mask)
        laplacian = uniform_laplacian(offsets, self.edges).square().sum(-1).mean(-1)
        edges = edge_lengths_squared(vertices, self.edges).mean(-1)
        kl = gaussian_kl(mean, log_variance)
        params = self.params
        loss = distance + params.laplacian_weight * laplacian + params.edge_weight * edges + params.kl_weight * kl
        return ModelOutput(
            loss=loss.mean(), chamfer_loss=distance.mean(), laplacian_loss=laplacian.mean(), edge_loss=edges.mean(),
            kl_loss=kl.mean(),
        )

    def offsets(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) -> vertex offsets (N, V, 3)."""
        return self.decoder(latents).view(len(latents), -1, 3)

    def encode(self, surface_points: torch.Tensor, point_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean (N, latent_dim) of each target surface."""
        points = point_batch(self.architecture, "surface_points", surface_points, point_mask)
        return self.encoder(points, point_mask).chunk(2, dim=-1)[0]

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None) -> torch.Tensor:
        """``num_samples`` meshes as template vertices (N, V, 3); the faces are ``self.faces``."""
        refuse_conditions(self.architecture, conditions)
        latents = prior_draw((num_samples, self.params.latent_dim), generator, self.template.device)
        return self.deform(self.offsets(latents)).float()


def build(config: ModelConfig) -> MeshModel:
    return MeshModel(config)
