"""Variational autoencoders with a Gaussian latent: ``vae``, ``beta_vae`` and ``conditional_vae``.

Read top to bottom: the decoder's likelihood p(x|z), the Gaussian KL, the model (encode, the
loss, the importance-weighted bound, sampling), and the builder.

For an example x (and, for ``conditional_vae``, its class y), the encoder gives the posterior
q(z|x) = N(mu, diag exp(logvar)); the decoder gives the mean of p(x|z). Training minimises

    loss = -log p(x | z) + weight * KL(q(z|x) || N(0, I)),    z = mu + exp(logvar / 2) * eps

(one reparameterised draw per example, the KL in closed form, in nats per example), with
weight = ``kl_weight`` (``vae``, ``conditional_vae``; 1 is the negative ELBO) or ``beta``
(``beta_vae``). ``log_prob`` is the importance-weighted bound with K = ``log_prob_samples``
draws, log p(x) >= log mean_k p(x, z_k) / q(z_k | x), which tightens as K grows.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from model_foundry.plugin import (
    FoundryError,
    FoundryModel,
    ModelConfig,
    ModelOutput,
    batch_examples,
    build_decoder,
    build_encoder,
)

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class DecoderLikelihood(nn.Module):
    """p(x | decoder mean): independent per value, with one learned scale per value of an example.

    ``discretized_logistic``: the probability of x's bin among ``levels`` evenly spaced values in
    [-1, 1] (the outer bins extend to infinity), as a density over [-1, 1] (the probability over
    the bin width), so that bits/dim, which adds log((levels - 1) / 2) per dimension, reports
    exactly -log2 P(x) per dimension. ``gaussian``: a Gaussian density.
    """

    def __init__(self, shape: tuple[int, ...], kind: str, levels: int, min_scale: float):
        super().__init__()
        self.kind = kind
        self.half_bin = 1.0 / (levels - 1)
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.min_log_scale = math.log(min_scale)

    def scale_log(self) -> torch.Tensor:
        return self.log_scale.clamp(min=self.min_log_scale)

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log p(x | mean) per example (N,), in nats, summed over the example's values."""
        log_scale = self.scale_log()
        if self.kind == "gaussian":
            per_value = -0.5 * ((x - mean) * torch.exp(-log_scale)).square() - log_scale - HALF_LOG_TWO_PI
        else:
            per_value = self._discretized_logistic(x, mean, log_scale) - math.log(2 * self.half_bin)
        return per_value.flatten(1).sum(-1)

    def _discretized_logistic(self, x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        inverse_scale = torch.exp(-log_scale)
        upper = (x - mean + self.half_bin) * inverse_scale
        lower = (x - mean - self.half_bin) * inverse_scale
        log_below_upper = F.logsigmoid(upper)  # the lowest bin: P(X < x + half_bin)
        log_above_lower = -F.softplus(lower)  # the highest bin: P(X > x - half_bin)
        # log(sigmoid(upper) - sigmoid(lower)), stable: sigmoid(u) - sigmoid(l) = sigmoid(u)(1 - sigmoid(l))(1 - exp(l - u))
        inside = log_below_upper + log_above_lower + torch.log(-torch.expm1(lower - upper))
        lowest, highest = x < -1 + self.half_bin, x > 1 - self.half_bin
        return torch.where(lowest, log_below_upper, torch.where(highest, log_above_lower, inside))

    def samples(self, mean: torch.Tensor, generator: torch.Generator | None, noise: bool) -> torch.Tensor:
        """What a model shows as samples of x given the decoder's mean: a draw of p(x | mean) when
        ``noise``, else the mean itself (clamped to [-1, 1] for quantised data); float32, on the mean's device."""
        if not noise:
            return (mean if self.kind == "gaussian" else mean.clamp(-1, 1)).float()
        draw_device = generator.device if generator is not None else mean.device
        return self.draw(mean.to(draw_device), generator).to(mean.device).float()

    def draw(self, mean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A draw of x given the decoder's mean (a logistic or Gaussian draw, rounded to a level when discretized)."""
        scale = self.scale_log().exp().to(mean.device)
        uniform = torch.rand(mean.shape, generator=generator, device=mean.device).clamp(1e-6, 1 - 1e-6)
        if self.kind == "gaussian":
            return mean + scale * torch.randn(mean.shape, generator=generator, device=mean.device)
        draw = mean + scale * (torch.log(uniform) - torch.log1p(-uniform))
        return (torch.round((draw.clamp(-1, 1) + 1) / (2 * self.half_bin)) * 2 * self.half_bin - 1).clamp(-1, 1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag exp(logvar)) || N(0, I)) per example (N,), in nats: the closed form
    0.5 * sum(mean^2 + exp(logvar) - logvar - 1)."""
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1).sum(-1)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag exp(logvar)), summed over the last dimension."""
    return (-0.5 * ((z - mean).square() * torch.exp(-logvar) + logvar) - HALF_LOG_TWO_PI).sum(-1)


def batch_data(model: FoundryModel, vectors: torch.Tensor | None, pixel_values: torch.Tensor | None) -> torch.Tensor:
    """The batch's examples (vectors or images), checked against the shape ``model`` was built for."""
    return batch_examples(model, model.data_shape, "model.encoder.input_shape and model.decoder.output_shape",
                          vectors=vectors, pixel_values=pixel_values)


def refuse_conditions(model: FoundryModel) -> None:
    raise FoundryError(f"this {model.architecture} is unconditional; sample without conditions (conditional_vae takes them)")


class GaussianVAE(FoundryModel):
    """The model of ``vae``, ``beta_vae`` and ``conditional_vae``."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.data_shape = tuple(params.encoder.input_shape)
        self.latent_dim = params.encoder.latent_dim
        self.num_classes = getattr(params, "num_classes", None)
        self.kl_weight = params.beta if config.architecture == "beta_vae" else params.kl_weight
        self.log_prob_samples = params.log_prob_samples
        self.sample_noise = params.sample_noise
        self.encoder = build_encoder(params.encoder, 2 * self.latent_dim)
        # A class enters the posterior as a learned offset of (mean, logvar), which is the encoder's
        # last linear layer applied to [features, one_hot(y)]; the decoder reads [z, one_hot(y)].
        classes = self.num_classes or 0
        self.class_posterior = nn.Linear(classes, 2 * self.latent_dim, bias=False) if classes else None
        self.decoder = build_decoder(attrs.evolve(params.decoder, latent_dim=self.latent_dim + classes))
        self.likelihood = DecoderLikelihood(self.data_shape, params.likelihood, params.levels, params.min_scale)

    # -- the batch ------------------------------------------------------------------------------
    def _one_hot(self, labels: torch.Tensor | None, count: int, device: torch.device) -> torch.Tensor | None:
        """One-hot classes of ``count`` examples, checked; None for an unconditional model (which ignores labels)."""
        if self.num_classes is None:
            return None
        if labels is None:
            raise FoundryError(f"this {self.architecture} is conditional (num_classes {self.num_classes}) and needs class_labels")
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        if labels.shape != (count,):
            raise FoundryError(f"expected {count} class labels, got a tensor of shape {list(labels.shape)}")
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise FoundryError(f"class labels must be in 0..{self.num_classes - 1}, got {sorted(set(labels.tolist()))}")
        return F.one_hot(labels, self.num_classes).float()

    # -- encoder and decoder --------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, one_hot: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of q(z|x[, y]), each (N, latent_dim)."""
        statistics = self.encoder(x)
        if one_hot is not None:
            statistics = statistics + self.class_posterior(one_hot)
        mean, logvar = statistics.chunk(2, dim=-1)
        return mean, logvar

    def decoder_mean(self, z: torch.Tensor, one_hot: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of p(x|z[, y]), in the data's layout."""
        return self.decoder(z if one_hot is None else torch.cat([z, one_hot], dim=-1))

    def encode(
        self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The posterior means (N, latent_dim) of the examples; a conditional model appends each
        example's one-hot class (N, latent_dim + num_classes), the decoder's whole input."""
        x = batch_data(self, vectors, pixel_values)
        one_hot = self._one_hot(class_labels, x.size(0), x.device)
        mean = self.posterior(x, one_hot)[0]
        return mean if one_hot is None else torch.cat([mean, one_hot], dim=-1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's mean for latents as :meth:`encode` gives them."""
        width = self.latent_dim + (self.num_classes or 0)
        if latents.dim() != 2 or latents.size(1) != width:
            what = f"{self.latent_dim} latent values and a one-hot class of {self.num_classes}" if self.num_classes else "latent values"
            raise FoundryError(f"{self.architecture} decodes latents of shape (N, {width}) ({what}), got {list(latents.shape)}")
        return self.decoder(latents)

    # -- training -------------------------------------------------------------------------------
    def forward(
        self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """``loss`` = ``reconstruction_loss`` + weight * ``kl_loss``, means over the batch in nats per example."""
        x = batch_data(self, vectors, pixel_values)
        one_hot = self._one_hot(class_labels, x.size(0), x.device)
        mean, logvar = self.posterior(x, one_hot)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        reconstruction = -self.likelihood.log_prob(x, self.decoder_mean(z, one_hot)).mean()
        kl = gaussian_kl(mean, logvar).mean()
        return ModelOutput(loss=reconstruction + self.kl_weight * kl, reconstruction_loss=reconstruction, kl_loss=kl)

    # -- the bound ------------------------------------------------------------------------------
    def log_prob(
        self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None, num_samples: int | None = None,
    ) -> torch.Tensor:
        """A lower bound on log p(x[| y]) per example (N,), in nats: the importance-weighted bound
        with K = ``num_samples`` (default ``log_prob_samples``) draws from q(z|x)."""
        x = batch_data(self, vectors, pixel_values)
        one_hot = self._one_hot(class_labels, x.size(0), x.device)
        count, draws = x.size(0), num_samples or self.log_prob_samples
        mean, logvar = self.posterior(x, one_hot)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(draws, *mean.shape, device=mean.device, dtype=mean.dtype)
        flat = z.reshape(draws * count, -1)
        repeated = x.unsqueeze(0).expand(draws, *x.shape).reshape(draws * count, *x.shape[1:])
        labels = None if one_hot is None else one_hot.repeat(draws, 1)
        log_likelihood = self.likelihood.log_prob(repeated, self.decoder_mean(flat, labels)).view(draws, count)
        log_prior = (-0.5 * z.square() - HALF_LOG_TWO_PI).sum(-1)
        log_weights = log_likelihood + log_prior - gaussian_log_density(z, mean, logvar)
        return torch.logsumexp(log_weights, dim=0) - math.log(draws)

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoded draws z ~ N(0, I): the decoder's mean, or a draw of p(x|z) with ``sample_noise``.

        A conditional model decodes class ``conditions[i]`` for sample i (uniform classes without
        conditions); an unconditional one refuses conditions.
        """
        if conditions is not None and self.num_classes is None:
            refuse_conditions(self)
        device = self.likelihood.log_scale.device
        draw_device = generator.device if generator is not None else device
        if conditions is None and self.num_classes is not None:
            conditions = torch.randint(self.num_classes, (num_samples,), generator=generator, device=draw_device)
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=draw_device).to(device)
        one_hot = self._one_hot(conditions, num_samples, device)
        mean = self.decoder_mean(z, one_hot)
        return self.likelihood.samples(mean, generator, self.sample_noise)


def build(config: ModelConfig) -> GaussianVAE:
    # create_model sets the modality (from the data, or its modality= argument) after the config's checks ran.
    problem = config.params.shape_problem()
    if problem is not None:
        raise FoundryError(problem)
    return GaussianVAE(config)
