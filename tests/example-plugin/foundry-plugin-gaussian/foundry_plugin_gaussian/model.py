"""A mixture of diagonal Gaussians, trained by maximum likelihood: the ``gaussian_mixture`` architecture.

An example (a ``vectors`` row of D numbers, or a ``pixel_values`` image flattened to
C·H·W numbers) has the exact log-density

    log p(x) = logsumexp_k [ log softmax(logits)_k + sum_d log N(x_d; mean_kd, scale_kd) ]

and a sample is drawn by picking a component k with probability softmax(logits)_k and adding
scaled Gaussian noise to its mean. A conditional model (``num_classes`` set) holds one such
mixture per class and picks it by ``class_labels``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model_foundry.plugin import FoundryError, FoundryModel, ModelConfig, ModelOutput

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


class GaussianMixture(FoundryModel):
    """The model of the ``gaussian_mixture`` architecture."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        params = config.params
        self.data_shape = tuple(params.data_shape)
        self.num_classes = params.num_classes
        mixtures, components, dimension = params.num_classes or 1, params.num_components, params.dimension
        self.logits = nn.Parameter(torch.zeros(mixtures, components))
        self.means = nn.Parameter(torch.randn(mixtures, components, dimension))
        self.log_scales = nn.Parameter(torch.zeros(mixtures, components, dimension))
        self.min_log_scale = math.log(params.min_scale)

    def forward(
        self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """The negative mean log-likelihood of the batch, in nats per example."""
        return ModelOutput(loss=-self.log_prob(vectors=vectors, pixel_values=pixel_values, class_labels=class_labels).mean())

    def log_prob(
        self, vectors: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Exact log-density of each example (N,), in nats; of x given its class when conditional."""
        x = self._flatten(vectors if vectors is not None else pixel_values)
        logits, means, log_scales = self._mixtures(self._classes(class_labels, x.size(0)), x.size(0))
        standardized = (x[:, None, :] - means) * torch.exp(-log_scales)
        per_component = (-0.5 * standardized.square() - log_scales - HALF_LOG_TWO_PI).sum(-1)
        return torch.logsumexp(logits.log_softmax(-1) + per_component, dim=-1)

    @torch.no_grad()
    def sample(
        self, num_samples: int, *, generator: torch.Generator | None = None, conditions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``num_samples`` examples in the data's layout: (N, D) vectors or (N, C, H, W) images.

        A conditional model samples class ``conditions[i]`` for example i; without conditions,
        classes are drawn uniformly. Every draw comes from ``generator`` where it lives, so a
        seeded CPU generator gives the same samples on any device.
        """
        if conditions is not None and self.num_classes is None:
            raise FoundryError(f"this {self.architecture} is unconditional (model.num_classes is null); sample without conditions")
        device = generator.device if generator is not None else self.means.device
        if conditions is None and self.num_classes is not None:
            conditions = torch.randint(self.num_classes, (num_samples,), generator=generator, device=device)
        classes = self._classes(conditions, num_samples)
        logits, means, log_scales = (t.float().to(device) for t in self._mixtures(classes, num_samples))
        picked = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
        rows = torch.arange(num_samples, device=device)
        noise = torch.randn(num_samples, means.size(-1), generator=generator, device=device)
        samples = means[rows, picked] + noise * log_scales[rows, picked].exp()
        return samples.to(self.means.device).reshape(num_samples, *self.data_shape)

    # -- the mixture's parameters for each example -------------------------------------------------
    def _flatten(self, x: torch.Tensor | None) -> torch.Tensor:
        if x is None:
            raise FoundryError(f"{self.architecture} needs a batch with 'vectors' or 'pixel_values'")
        if tuple(x.shape[1:]) != self.data_shape:
            raise FoundryError(
                f"{self.architecture} was built for examples of shape {list(self.data_shape)} (model.data_shape), "
                f"and the data's examples have shape {list(x.shape[1:])}; set model.data_shape to {list(x.shape[1:])}"
            )
        return x.flatten(1).float()

    def _classes(self, labels: torch.Tensor | None, count: int) -> torch.Tensor | None:
        """The class of each of ``count`` examples, checked; None for an unconditional model."""
        if self.num_classes is None:
            return None  # labels that come with the data (moons, digits) are not conditioned on
        if labels is None:
            raise FoundryError(f"this {self.architecture} is conditional (num_classes {self.num_classes}) and needs class_labels")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (count,):
            raise FoundryError(f"expected {count} class labels, got a tensor of shape {list(labels.shape)}")
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise FoundryError(f"class labels must be in 0..{self.num_classes - 1}, got {sorted(set(labels.tolist()))}")
        return labels

    def _mixtures(self, classes: torch.Tensor | None, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mixture of each of ``count`` examples: logits (N, K), means and log-scales (N, K, D)."""
        log_scales = self.log_scales.clamp(min=self.min_log_scale)
        if classes is None:
            return self.logits.expand(count, -1), self.means.expand(count, -1, -1), log_scales.expand(count, -1, -1)
        classes = classes.to(self.logits.device)
        return self.logits[classes], self.means[classes], log_scales[classes]

def build(config: ModelConfig) -> GaussianMixture:
    # create_model sets the modality (from the data, or its modality= argument) after the config's checks ran.
    problem = config.params.shape_problem()
    if problem is not None:
        raise FoundryError(f"model.data_shape of a gaussian_mixture for {config.params.modality} data must be {problem}")
    return GaussianMixture(config)
