"""The vector-quantised VAE: the ``vq_vae`` architecture.

Read top to bottom: the quantiser (nearest codebook entry, straight-through gradient, codebook
and commitment losses or moving-average codebook updates), the autoregressive prior over
codes, the model, and the builder.

The encoder's output for an example is cut into L = latent_dim / code_dim code vectors z_e;
each is replaced by its nearest codebook entry e, and the decoder reads e. Training minimises

    loss = -log p(x | e) + ||sg(z_e) - e||^2 + commitment_weight * ||z_e - sg(e)||^2 - log p_prior(codes)

(sg: stop-gradient; squared distances summed over an example's code vectors; the codebook term
is absent with ``ema_updates``, where the codebook follows moving averages of the encodings
assigned to it). The decoder's gradient reaches the encoder unchanged through the
straight-through estimate z_e + sg(e - z_e). The prior (a GRU over the L codes, trained on the
detached codes) draws the codes of samples, and with the deterministic encoder it gives the
bound log p(x) >= log p(x | e(x)) + log p_prior(codes(x)) that ``log_prob`` reports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from foundry_plugin_vae.model import DecoderLikelihood, batch_data, refuse_conditions
from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput, build_decoder, build_encoder


class VectorQuantizer(nn.Module):
    """Nearest-entry quantisation of code vectors (N, L, D) against a codebook (K, D)."""

    def __init__(self, codebook_size: int, code_dim: int, ema_updates: bool, ema_decay: float):
        super().__init__()
        self.ema_updates, self.ema_decay = ema_updates, ema_decay
        codebook = torch.randn(codebook_size, code_dim)
        if ema_updates:
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
            self.register_buffer("embedding_sum", torch.zeros(codebook_size, code_dim))
        else:
            self.codebook = nn.Parameter(codebook)
        # The codebook starts as encodings of the first training batch (k-means style), so that no
        # entry starts far from every encoding and stays unused.
        self.register_buffer("initialized", torch.tensor(False))

    def nearest(self, encodings: torch.Tensor) -> torch.Tensor:
        """The index (N, L) of each code vector's nearest codebook entry (squared Euclidean distance)."""
        codebook = self.codebook.detach()
        distances = encodings.detach().square().sum(-1, keepdim=True) - 2 * encodings.detach() @ codebook.T
        return (distances + codebook.square().sum(-1)).argmin(-1)

    def forward(self, encodings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(straight-through quantised vectors (N, L, D), codes (N, L), losses and the codebook's perplexity)."""
        if self.training and not bool(self.initialized):
            self._initialize(encodings.detach())
        codes = self.nearest(encodings)
        entries = self.codebook[codes]
        terms = {"commitment_loss": (encodings - entries.detach()).square().sum((-1, -2)).mean()}
        if not self.ema_updates:
            terms["codebook_loss"] = (encodings.detach() - entries).square().sum((-1, -2)).mean()
        elif self.training and torch.is_grad_enabled():
            self._moving_average_update(encodings.detach(), codes)
        usage = F.one_hot(codes, self.codebook.size(0)).flatten(0, 1).float().mean(0)
        terms["codebook_perplexity"] = torch.exp(-(usage * torch.log(usage + 1e-10)).sum())
        return encodings + (entries - encodings).detach(), codes, terms

    @torch.no_grad()
    def _initialize(self, encodings: torch.Tensor) -> None:
        flat = encodings.flatten(0, 1)
        picks = torch.randint(flat.size(0), (self.codebook.size(0),), device=flat.device)
        self.codebook.copy_(flat[picks] + 0.01 * torch.randn_like(flat[picks]))
        if self.ema_updates:
            self.embedding_sum.copy_(self.codebook)
            self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _moving_average_update(self, encodings: torch.Tensor, codes: torch.Tensor) -> None:
        assigned = F.one_hot(codes.flatten(), self.codebook.size(0)).type_as(encodings)
        self.cluster_size.lerp_(assigned.sum(0), 1 - self.ema_decay)
        self.embedding_sum.lerp_(assigned.T @ encodings.flatten(0, 1), 1 - self.ema_decay)
        # Laplace smoothing keeps an entry nobody chose from dividing by zero.
        total, entries = self.cluster_size.sum(), self.codebook.size(0)
        smoothed = (self.cluster_size + 1e-5) / (total + entries * 1e-5) * total
        self.codebook.copy_(self.embedding_sum / smoothed[:, None])


class CodePrior(nn.Module):
    """An autoregressive prior p(c_1..c_L) = prod_i p(c_i | c_<i): a GRU reading the previous codes."""

    def __init__(self, codebook_size: int, hidden: int):
        super().__init__()
        self.start = codebook_size  # the token before the first code
        self.embed = nn.Embedding(codebook_size + 1, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.logits = nn.Linear(hidden, codebook_size)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(codes) per example (N,) for codes (N, L)."""
        previous = torch.cat([torch.full_like(codes[:, :1], self.start), codes[:, :-1]], dim=1)
        hidden, _ = self.gru(self.embed(previous))
        log_probs = self.logits(hidden).log_softmax(-1)
        return log_probs.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(self, count: int, length: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """Codes (count, length), each drawn from p(c_i | c_<i) with ``generator`` (on its device)."""
        draw_device = generator.device if generator is not None else device
        token = torch.full((count, 1), self.start, dtype=torch.long, device=device)
        state, codes = None, []
        for _ in range(length):
            hidden, state = self.gru(self.embed(token), state)
            probabilities = self.logits(hidden[:, -1]).softmax(-1).float().to(draw_device)
            token = torch.multinomial(probabilities, 1, generator=generator).to(device)
            codes.append(token)
        return torch.cat(codes, dim=1)


class VQVAE(FoundryModel):
    """The model of ``vq_vae``."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.data_shape = tuple(params.encoder.input_shape)
        self.num_codes, self.code_dim = params.num_codes, params.code_dim
        self.commitment_weight = params.commitment_weight
        self.sample_noise = params.sample_noise
        self.encoder = build_encoder(params.encoder, params.encoder.latent_dim)
        self.quantizer = VectorQuantizer(params.codebook_size, params.code_dim, params.ema_updates, params.ema_decay)
        self.decoder = build_decoder(params.decoder)
        self.likelihood = DecoderLikelihood(self.data_shape, params.likelihood, params.levels, params.min_scale)
        self.prior = CodePrior(params.codebook_size, params.prior_hidden)

    def encodings(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's code vectors z_e (N, L, code_dim)."""
        return self.encoder(x).view(x.size(0), self.num_codes, self.code_dim)

    def encode(self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None, **_: torch.Tensor) -> torch.Tensor:
        """The codes (N, L) of the examples: the index of each code vector's nearest codebook entry."""
        return self.quantizer.nearest(self.encodings(batch_data(self, vectors, pixel_values)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The decoder's mean for codes (N, L)."""
        return self.decoder(self.quantizer.codebook[codes].flatten(1))

    def forward(
        self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None, **_: torch.Tensor,
    ) -> ModelOutput:
        """``loss`` = reconstruction + codebook + commitment_weight * commitment + prior losses (nats per example);
        ``codebook_perplexity`` = exp(entropy of the batch's code usage), 1 to codebook_size."""
        x = batch_data(self, vectors, pixel_values)
        quantized, codes, terms = self.quantizer(self.encodings(x))
        reconstruction = -self.likelihood.log_prob(x, self.decoder(quantized.flatten(1))).mean()
        prior = -self.prior.log_prob(codes).mean()
        loss = reconstruction + terms.get("codebook_loss", 0.0) + self.commitment_weight * terms["commitment_loss"] + prior
        return ModelOutput(loss=loss, reconstruction_loss=reconstruction, prior_loss=prior, **terms)

    def log_prob(self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None, **_: torch.Tensor) -> torch.Tensor:
        """The bound log p(x | e(x)) + log p_prior(codes(x)) per example (N,), in nats."""
        x = batch_data(self, vectors, pixel_values)
        codes = self.quantizer.nearest(self.encodings(x))
        return self.likelihood.log_prob(x, self.decode(codes)) + self.prior.log_prob(codes)

    @torch.no_grad()
    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Codes drawn from the prior, decoded: the decoder's mean, or a draw of p(x|e) with ``sample_noise``."""
        if conditions is not None:
            refuse_conditions(self)
        mean = self.decode(self.prior.sample(num_samples, self.num_codes, generator, self.likelihood.log_scale.device))
        return self.likelihood.samples(mean, generator, self.sample_noise)


def build(config: ModelConfig) -> VQVAE:
    problem = config.params.shape_problem()
    if problem is not None:
        raise FoundryError(problem)
    return VQVAE(config)
