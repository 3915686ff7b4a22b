"""What the three models share: discrete levels of continuous data, and exact densities from them.

Each model predicts a categorical distribution over ``levels`` codes for every value of an
example. A code stands for an interval (its bin) of the data's range [-1, 1], and the model's
density of ``x`` is the probability of x's code spread evenly over that bin:

    log p(x) = sum_d [ log P(code_d | codes before d) - log width(code_d) ]

- :class:`UniformLevels` (images): codes ``0 .. L-1`` at ``-1 + 2k/(L-1)``, each bin
  ``2/(L-1)`` wide. This is the convention of the core's ``bits_per_dim``
  (``model_foundry.metrics``): it adds back ``log((L-1)/2)`` nats per dimension, so the
  metric reports exactly ``-log2 P(code)`` per dimension, the bits/dim of discrete models in
  the literature.
- :class:`MuLaw` (audio): ``y = sign(x) log(1 + mu|x|) / log(1 + mu)`` with ``mu = L - 1``,
  codes on a uniform grid of y, bins mapped back to x and clipped to [-1, 1]; narrow near
  zero, wide near full scale. Those densities integrate to 1 over [-1, 1].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class UniformLevels:
    """``levels`` evenly spaced values on [-1, 1]: the intensities of quantised images."""

    def __init__(self, levels: int):
        self.levels = levels

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest level's index of each value (int64)."""
        return torch.round((x.double() + 1) * (self.levels - 1) / 2).clamp(0, self.levels - 1).long()

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.float() * (2.0 / (self.levels - 1)) - 1.0

    def log_width(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.full(codes.shape, math.log(2.0 / (self.levels - 1)), dtype=torch.float64, device=codes.device)


class MuLaw:
    """``levels`` mu-law codes of audio in [-1, 1] (``mu = levels - 1``)."""

    def __init__(self, levels: int):
        self.levels = levels
        self.mu = levels - 1

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log1p(self.mu * x.abs()) / math.log1p(self.mu)

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sign(y) * torch.expm1(y.abs() * math.log1p(self.mu)) / self.mu

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        y = self.compress(x.double().clamp(-1, 1))
        return torch.round((y + 1) * self.mu / 2).clamp(0, self.mu).long()

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        return self.expand(codes.double() * (2.0 / self.mu) - 1.0).float()

    def log_width(self, codes: torch.Tensor) -> torch.Tensor:
        centre = codes.double() * (2.0 / self.mu) - 1.0
        low, high = (centre - 1.0 / self.mu).clamp(-1, 1), (centre + 1.0 / self.mu).clamp(-1, 1)
        return torch.log(self.expand(high) - self.expand(low))


def log_pmf(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``sum log P(code)`` per example (N,), in nats; logits (N, ..., levels), codes (N, ...)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    picked = logits.log_softmax(-1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    return picked.flatten(1).sum(1)


def log_density(log_probability: torch.Tensor, codes: torch.Tensor, quantizer: UniformLevels | MuLaw) -> torch.Tensor:
    """The density of the data (N,) in nats from the probability of its codes: minus each bin's log-width."""
    widths = quantizer.log_width(codes).flatten(1).sum(1)
    return (log_probability.double() - widths).to(log_probability.dtype)


def draw(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One code per row of ``logits`` (N, levels) by the inverse CDF of one uniform draw each.

    One ``torch.rand`` per call, from ``generator`` on its device, so a seed repeats the
    samples, and two computations of the same logits draw the same codes."""
    device = generator.device if generator is not None else logits.device
    probabilities = logits.double().softmax(-1).to(device)
    uniform = torch.rand(logits.shape[0], 1, generator=generator, device=device, dtype=torch.float64)
    codes = (probabilities.cumsum(-1) < uniform).sum(-1).clamp(max=logits.shape[-1] - 1)
    return codes.to(logits.device)


def check_classes(model: torch.nn.Module, labels: torch.Tensor | None, count: int, from_data: bool) -> torch.Tensor | None:
    """The checked class of each of ``count`` examples, or None for an unconditional model.

    ``from_data``: labels that come with a batch, which an unconditional model ignores; otherwise
    they are ``conditions`` of ``sample``, which an unconditional model refuses."""
    from model_foundry.plugin import FoundryError

    if model.num_classes is None:
        if labels is not None and not from_data:
            raise FoundryError(f"this {model.architecture} is unconditional (model.num_classes is null); "
                               "sample without conditions")
        return None
    if labels is None:
        if from_data:
            raise FoundryError(f"this {model.architecture} is conditional (num_classes {model.num_classes}) "
                               "and needs class_labels")
        return None
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (count,):
        raise FoundryError(f"expected {count} class labels, got a tensor of shape {list(labels.shape)}")
    if bool(((labels < 0) | (labels >= model.num_classes)).any()):
        raise FoundryError(f"class labels must be in 0..{model.num_classes - 1}, got {sorted(set(labels.tolist()))}")
    return labels


def sampling_classes(
    model: torch.nn.Module, conditions: torch.Tensor | None, count: int, generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor | None:
    """The class of each of ``count`` samples: ``conditions`` checked, or drawn uniformly from
    ``generator`` for a conditional model sampled without them; None for an unconditional model."""
    classes = check_classes(model, conditions, count, from_data=False)
    if classes is None and model.num_classes is not None:
        where = generator.device if generator is not None else device
        classes = torch.randint(model.num_classes, (count,), generator=generator, device=where)
    return None if classes is None else classes.to(device)


def check_shape(model: torch.nn.Module, x: torch.Tensor | None, key: str, expected: tuple[int, ...], field: str) -> torch.Tensor:
    """``x`` (a batch under ``key``) of examples of shape ``expected``, or a FoundryError saying what to change."""
    from model_foundry.plugin import FoundryError

    if x is None:
        raise FoundryError(f"{model.architecture} needs a batch with {key!r}")
    if tuple(x.shape[1:]) != tuple(expected):
        raise FoundryError(
            f"{model.architecture} was built for examples of shape {list(expected)} (model.{field}), and the data's "
            f"examples have shape {list(x.shape[1:])}; set model.{field} to {list(x.shape[1:])}"
        )
    return x


def in_eval_mode(method: Callable[..., T]) -> Callable[..., T]:
    """Run a model's method in eval mode (no dropout, whose draws would not come from the
    sampler's generator) and restore the mode it had."""

    @functools.wraps(method)
    def wrapper(model: torch.nn.Module, *args: object, **kwargs: object) -> T:
        was_training = model.training
        model.eval()
        try:
            return method(model, *args, **kwargs)
        finally:
            model.train(was_training)

    return wrapper
