"""FAVOR+ written plainly (Choromanski et al., 2021): the reference the tuned tiles are tested against.

The positive feature map, bidirectional and causal linear attention over features, one decoding step.
``docs/plugins/performer.md`` (*How FAVOR+ is computed*) explains the stabiliser, the chunks and the state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch


class FavorFeatures(NamedTuple):
    """``phi(x) = features * exp(log_scale)``; ``features`` (..., n, m) peak at ``1 + eps`` per position."""

    features: torch.Tensor
    log_scale: torch.Tensor  # (..., n)


def favor_features(x: torch.Tensor, projection: torch.Tensor, *, eps: float = 1e-4) -> FavorFeatures:
    """``phi(x) = exp(W x / d^1/4 - |x|^2 / (2 sqrt d)) / sqrt m`` of ``x`` (..., n, d), ``W`` = ``projection``
    (m, d). ``eps`` keeps every denominator positive and couples no positions; 0 is the exact estimator."""
    dim, nb_features = x.shape[-1], projection.shape[0]
    logits = x @ (projection.to(x.dtype) * dim**-0.25).T
    shift = logits.detach().amax(dim=-1)  # a stabiliser, added back exactly through log_scale
    features = torch.exp(logits - shift.unsqueeze(-1)) + eps
    return FavorFeatures(features, shift - x.square().sum(dim=-1) / (2 * math.sqrt(dim)) - 0.5 * math.log(nb_features))


def lowest(dtype: torch.dtype) -> float:
    """A padded key's log-scale: a finite "log of zero" (``-inf - -inf`` is NaN, this minus itself 0)."""
    return torch.finfo(dtype).min


def padding_mask(key_padding_mask: torch.Tensor, batch_shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``key_padding_mask`` (batch, n_k), True on padded keys, viewed as ``(*batch_shape, n_k)``."""
    view = key_padding_mask.view(key_padding_mask.shape[0], *([1] * (len(batch_shape) - 1)), -1)
    return view.expand(*batch_shape, key_padding_mask.shape[-1])


def empty_to_one(denominators: torch.Tensor, *, in_place: bool = False) -> torch.Tensor:
    """Set to 1 the denominators of queries that see no unpadded key (their numerators are 0): output 0 and
    a finite gradient, where clamping to the smallest float overflows in backward."""
    empty = denominators < torch.finfo(denominators.dtype).tiny
    return denominators.masked_fill_(empty, 1.0) if in_place else denominators.masked_fill(empty, 1.0)


def _keys(v: torch.Tensor, log_scale: torch.Tensor | None, key_padding_mask: torch.Tensor | None):
    """Values with a ones column (numerators and normaliser in one product) and the keys' log-scales;
    padded keys get zeros in both and the lowest log-scale, so they never set a maximum."""
    values = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    log_scale = torch.zeros_like(v[..., 0]) if log_scale is None else log_scale
    if key_padding_mask is not None:
        padded = padding_mask(key_padding_mask, v.shape[:-2])
        values = values.masked_fill(padded.unsqueeze(-1), 0.0)
        log_scale = log_scale.masked_fill(padded, lowest(log_scale.dtype))
    return values, log_scale


def _normalise(numerators_and_denominators: torch.Tensor) -> torch.Tensor:
    return numerators_and_denominators[..., :-1] / empty_to_one(numerators_and_denominators[..., -1:])


def linear_attention(q, k, v, key_padding_mask=None, *, k_log_scale=None) -> torch.Tensor:
    """Bidirectional ``D^-1 phi(Q) (phi(K)^T V)`` over features ``q`` (..., n_q, m) and ``k`` (..., n_k, m), with
    log-scales ``k_log_scale`` (..., n_k; 0 if None), values ``v`` (..., n_k, d) and ``key_padding_mask``
    (batch, n_k), True on padded keys."""
    values, log_scale = _keys(v, k_log_scale, key_padding_mask)
    weights = torch.exp(log_scale - log_scale.detach().amax(dim=-1, keepdim=True))  # relative to the largest
    summary = (values * weights.unsqueeze(-1)).transpose(-1, -2) @ k  # (..., d + 1, m)
    return _normalise(q @ summary.transpose(-1, -2))


@dataclass
class CausalLinearState:
    """The keys so far: ``summary`` (..., d + 1, m) holds ``sum_j w_j v_j phi(k_j)^T`` and, in its last row,
    ``sum_j w_j phi(k_j)``, with ``w_j = exp(log_scale_j - max_log_scale)``, the running maximum (...)."""

    summary: torch.Tensor
    max_log_scale: torch.Tensor

    @classmethod
    def empty(cls, batch_shape, nb_features: int, dim_value: int, *, dtype, device=None) -> CausalLinearState:
        summary = torch.zeros(*batch_shape, dim_value + 1, nb_features, dtype=dtype, device=device)
        return cls(summary, torch.full(tuple(batch_shape), lowest(dtype), dtype=dtype, device=device))


def causal_linear_attention(
    q, k, v, chunk_size: int = 64, *, k_log_scale=None, key_padding_mask=None, state: CausalLinearState | None = None
) -> tuple[torch.Tensor, CausalLinearState]:
    """Query ``i`` attends to keys ``j <= i`` and those in ``state`` (arguments as in :func:`linear_attention`),
    a chunk of positions at a time. Returns the outputs (..., n, d) and the state after the last position."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    values, log_scale = _keys(v, k_log_scale, key_padding_mask)
    if state is None:
        state = CausalLinearState.empty(k.shape[:-2], k.shape[-1], v.shape[-1], dtype=values.dtype, device=v.device)
    summary, maximum, outs = state.summary, state.max_log_scale, []
    for start in range(0, q.shape[-2], chunk_size):
        at = slice(start, start + chunk_size)
        queries, keys, vals, scales = q[..., at, :], k[..., at, :], values[..., at, :], log_scale[..., at]
        # Query i weighs key j by exp(l_j - M_i) <= 1, M_i the running maximum of the keys' log-scales up to i.
        running = torch.maximum(scales.detach().cummax(dim=-1).values, maximum.unsqueeze(-1))
        future = torch.ones(scales.shape[-1], scales.shape[-1], dtype=torch.bool, device=q.device).triu(1)
        decay = (scales.unsqueeze(-2) - running.unsqueeze(-1)).masked_fill(future, -math.inf).exp()
        within = (queries @ keys.transpose(-1, -2) * decay) @ vals
        earlier = queries @ summary.transpose(-1, -2) * torch.exp(maximum.unsqueeze(-1) - running).unsqueeze(-1)
        outs.append(_normalise(within + earlier))
        weighted = vals * torch.exp(scales - running[..., -1:]).unsqueeze(-1)
        summary = summary * torch.exp(maximum - running[..., -1])[..., None, None] + weighted.transpose(-1, -2) @ keys
        maximum = running[..., -1]
    return torch.cat(outs, dim=-2), CausalLinearState(summary, maximum)


def causal_linear_attention_step(q_t, k_t, v_t, state: CausalLinearState, *, k_log_scale_t=None):
    """One new position, ``q_t``, ``k_t`` (..., m) and ``v_t`` (..., d): its output (..., d) and a new state
    (the one given stays as it was), in constant time and memory."""
    values, log_scale = _keys(v_t, k_log_scale_t, None)
    maximum = torch.maximum(state.max_log_scale, log_scale.detach())
    summary = state.summary * torch.exp(state.max_log_scale - maximum)[..., None, None]
    # The key's outer product as a batched product of width 1: faster on CPU than a broadcast product.
    summary.view(-1, *summary.shape[-2:]).baddbmm_(
        (values * torch.exp(log_scale - maximum)[..., None]).reshape(-1, values.shape[-1], 1),
        k_t.reshape(-1, 1, k_t.shape[-1]),
    )
    return _normalise((q_t.unsqueeze(-2) @ summary.transpose(-1, -2)).squeeze(-2)), CausalLinearState(summary, maximum)
