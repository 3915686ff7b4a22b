"""FAVOR+ attention: positive orthogonal random features for the softmax kernel (Choromanski et al., 2021).

Reading order: the random projection, the feature map, bidirectional linear attention, causal
linear attention (chunkwise, with the final recurrent state), one-token recurrent decoding, the
forward pass for when nothing needs a gradient, and :class:`FavorAttention`, the module the
Performer layers hold.

How the maths works -- the feature map, the stabiliser that keeps it exact and strictly causal,
the chunked causal pass and the recurrent state -- is explained in ``docs/plugins/performer.md``
(section *How FAVOR+ is computed*). Comments here say why the code is shaped as it is for speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "CausalLinearState",
    "FavorAttention",
    "FavorFeatures",
    "causal_linear_attention",
    "causal_linear_attention_step",
    "causal_linear_attention_with_state",
    "default_nb_features",
    "favor_features",
    "linear_attention",
    "orthogonal_gaussian_projection",
]


def default_nb_features(dim_head: int) -> int:
    """The FAVOR+ paper's default number of random features, ``d log d``."""
    return max(1, int(dim_head * math.log(dim_head)))


# --- random projection ------------------------------------------------------------------------


def orthogonal_gaussian_projection(
    nb_features: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Draw ``(nb_features, dim)`` orthogonal random features.

    Rows come in blocks of ``dim`` mutually orthogonal directions (QR of a Gaussian matrix; the
    last block is truncated), and each row is rescaled by the norm of an independent
    ``dim``-dimensional Gaussian vector, so that every row is marginally ``N(0, I_dim)`` -- which
    keeps the kernel estimator unbiased -- while orthogonality within a block lowers its variance.
    """
    if nb_features < 1 or dim < 1:
        raise ValueError(f"nb_features and dim must be positive, got {nb_features} and {dim}")
    device = torch.empty(0, device=device).device  # honours a surrounding `with torch.device(...)`
    dtype = dtype or torch.get_default_dtype()
    if device.type == "meta":
        return torch.empty(nb_features, dim, device=device, dtype=dtype)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    nb_blocks = -(-nb_features // dim)
    gaussian = torch.randn(nb_blocks, dim, dim, generator=generator, device=draw_device, dtype=torch.float64)
    # Q of the QR decomposition is Haar-distributed only once its column signs follow R's diagonal.
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    directions = q.transpose(-1, -2).reshape(nb_blocks * dim, dim)[:nb_features]
    norms = torch.randn(nb_features, dim, generator=generator, device=draw_device, dtype=torch.float64).norm(dim=-1)
    return (directions * norms[:, None]).to(device=device, dtype=dtype)


# --- feature map ------------------------------------------------------------------------------


class FavorFeatures(NamedTuple):
    """Positive random features of a batch of positions, kept in a numerically safe form.

    ``phi(x) = features * exp(log_scale)``, up to the stabiliser ``eps``: ``features``
    (..., n, m) has its largest entry per position equal to ``1 + eps`` and ``log_scale``
    (..., n) carries the rest, gradient included (the |x|**2 term depends on x).
    """

    features: torch.Tensor
    log_scale: torch.Tensor


class _ShiftedExpFeatures(torch.autograd.Function):
    """``exp(x @ weight.T - shift) + eps`` with ``shift`` the (detached) maximum over the last dimension.

    One function rather than a product and element-wise ops, for speed on CPU:

    * ``exp2`` with ``log2(e)`` folded into the small ``(m, d)`` weight: torch's ``exp2`` is about
      three times faster than its ``exp``, and the change of base costs no pass over ``(n, m)``;
    * the shift, the exponential and ``eps`` reuse the product's memory, and only the features
      (which attention keeps anyway), ``x`` and the weight are saved for backward;
    * the backward folds ``ln 2`` back into the weight instead of scaling ``(n, m)`` gradients:
      ``d features / d logits = features - eps`` in natural units.

    Returns the features and the shift in natural-log units.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = x @ (weight * (1 / math.log(2))).transpose(-1, -2)  # base-2 logits
        shift = logits.amax(dim=-1, keepdim=True)
        features = logits.sub_(shift).exp2_()
        if eps:
            features.add_(eps)
        ctx.save_for_backward(x, weight, features)
        ctx.eps = eps
        shift = shift.squeeze(-1).mul_(math.log(2))
        ctx.mark_non_differentiable(shift)
        return features, shift

    @staticmethod
    def backward(
        ctx, grad: torch.Tensor, _: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, weight, features = ctx.saved_tensors
        grad_logits = (features - ctx.eps).mul_(grad)
        grad_x = grad_logits @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = grad_logits.reshape(-1, weight.shape[0]).T @ x.reshape(-1, weight.shape[1])
        return grad_x, grad_weight, None


def favor_features(x: torch.Tensor, projection: torch.Tensor, *, eps: float = 1e-4) -> FavorFeatures:
    """The positive softmax-kernel features of ``x`` (..., n, d) for ``projection`` (m, d).

    ``eps`` is added to the shifted features (so a position's largest entry is ``1 + eps``): it
    keeps every denominator positive whatever the inputs. It is relative to each position's own
    scale, so it never couples positions; ``eps=0`` gives the exact, unbiased estimator.
    Queries and keys use the same map; only what attention does with ``log_scale`` differs.
    """
    dim, nb_features = x.shape[-1], projection.shape[0]
    # The shift is a stabiliser: it is detached, and added back exactly through log_scale.
    features, shift = _ShiftedExpFeatures.apply(x, projection.to(x.dtype) * dim**-0.25, eps)
    squared_norm = x.square().sum(dim=-1)
    log_scale = shift - squared_norm / (2 * math.sqrt(dim)) - 0.5 * math.log(nb_features)
    return FavorFeatures(features, log_scale)


# --- attention over features ------------------------------------------------------------------
#
# Layout, for speed: the values get a ones column, so that one product gives numerators and
# denominators together, and key summaries are kept value-major, ``(d + 1, m)``, computed as
# ``values^T @ k``. Then the gradient with respect to the key features comes out of the matrix
# product contiguous; with ``k^T @ values`` it comes out transposed, and every element-wise
# backward step and gradient sum over ``(n, m)`` after it runs several times slower.


def _lowest(dtype: torch.dtype) -> float:
    """A finite "log of zero": padded keys get it, so they never win a running maximum, and
    differences of two such values stay 0 instead of the NaN that ``-inf - -inf`` would give."""
    return torch.finfo(dtype).min


def _prepare_keys(
    v: torch.Tensor, k_log_scale: torch.Tensor | None, key_padding_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Values with a ones column appended (numerator and normaliser in one product) and key log-scales.

    Padded keys get zero values and ones -- out of numerator and denominator -- and the lowest
    log-scale, so they never set the running maximum.
    """
    values = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    log_scale = torch.zeros_like(v[..., 0]) if k_log_scale is None else k_log_scale
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be a bool tensor, True on padded keys")
        padded = key_padding_mask.view(key_padding_mask.shape[0], *([1] * (values.dim() - 3)), -1)
        values = values.masked_fill(padded.unsqueeze(-1), 0.0)
        log_scale = log_scale.masked_fill(padded, _lowest(log_scale.dtype))
    return values, log_scale


def _normalise(numerator_and_denominator: torch.Tensor) -> torch.Tensor:
    """Split the ones column back off and divide; a query with no (unpadded) key gets zeros."""
    numerator, denominator = numerator_and_denominator[..., :-1], numerator_and_denominator[..., -1:]
    return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    k_log_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bidirectional linear attention ``D^-1 phi(Q) (phi(K)^T V)``.

    ``q`` (..., n_q, m) and ``k`` (..., n_k, m) are non-negative features, ``v`` (..., n_k, d);
    ``k_log_scale`` (..., n_k) are the keys' log-scales (:class:`FavorFeatures`), zero if omitted;
    ``key_padding_mask`` (batch, n_k) is True on padded keys, which are removed from both the
    numerator and the denominator.
    """
    return _attend(q, _key_summary(k, v, k_log_scale, key_padding_mask))


def _key_summary(
    k: torch.Tensor, v: torch.Tensor, k_log_scale: torch.Tensor | None, key_padding_mask: torch.Tensor | None
) -> torch.Tensor:
    """All keys in one ``(d + 1, m)`` summary, weighted relative to the largest key scale."""
    values, log_scale = _prepare_keys(v, k_log_scale, key_padding_mask)
    weights = torch.exp(log_scale - log_scale.detach().amax(dim=-1, keepdim=True))
    return (values * weights.unsqueeze(-1)).transpose(-1, -2) @ k


def _attend(q: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
    return _normalise(q @ summary.transpose(-1, -2))


@dataclass
class CausalLinearState:
    """Everything causal linear attention remembers about the keys seen so far.

    ``summary`` (..., d + 1, m) holds ``S^T`` with ``S = sum_j w_j phi(k_j) v_j^T`` in its first
    ``d`` rows and ``z = sum_j w_j phi(k_j)`` in the last, with
    ``w_j = exp(log_scale_j - max_log_scale)``; ``max_log_scale`` (...) is the running maximum of
    the key log-scales. Its size does not grow with the sequence.
    """

    summary: torch.Tensor
    max_log_scale: torch.Tensor

    @classmethod
    def empty(
        cls, batch_shape: torch.Size | tuple[int, ...], nb_features: int, dim_value: int, *,
        dtype: torch.dtype, device: torch.device | str | None = None,
    ) -> CausalLinearState:
        summary = torch.zeros(*batch_shape, dim_value + 1, nb_features, dtype=dtype, device=device)
        return cls(summary, torch.full(tuple(batch_shape), _lowest(dtype), dtype=dtype, device=device))

    @property
    def context(self) -> torch.Tensor:
        """``S = sum_j w_j phi(k_j) v_j^T`` (..., m, d)."""
        return self.summary[..., :-1, :].transpose(-1, -2)

    @property
    def normalizer(self) -> torch.Tensor:
        """``z = sum_j w_j phi(k_j)`` (..., m)."""
        return self.summary[..., -1, :]


def _prefix_scan_(
    initial: torch.Tensor, chunk_summaries: torch.Tensor, carry: torch.Tensor, gain: torch.Tensor
) -> torch.Tensor:
    """Overwrite ``chunk_summaries`` (..., chunks, d + 1, m) with the summaries before each chunk
    (see :class:`_PrefixSummaries`; ``carry`` and ``gain`` (..., chunks, 1, 1)); returns the one after the last."""
    total = initial
    for index in range(chunk_summaries.shape[-3]):
        chunk = chunk_summaries[..., index, :, :]
        following = torch.addcmul(total * carry[..., index, :, :], chunk, gain[..., index, :, :])
        chunk.copy_(total)
        total = following
    return total


def _running_maxima(
    log_scale: torch.Tensor, initial: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For chunked key log-scales (..., chunks, C) after keys whose maximum was ``initial`` (...):
    each chunk's own maximum (..., chunks), the running maximum before each chunk and after the
    last (..., chunks + 1), and the running maximum at each position (..., chunks, C)."""
    chunk_max = log_scale.amax(dim=-1)
    before = torch.cat([initial.unsqueeze(-1), chunk_max], dim=-1).cummax(dim=-1).values
    running = torch.maximum(log_scale.cummax(dim=-1).values, before[..., :-1].unsqueeze(-1))
    return chunk_max, before, running


class _PrefixSummaries(torch.autograd.Function):
    """The summaries before each chunk: ``S_0 = initial``, ``S_{c+1} = carry_c S_c + gain_c K_c``.

    ``carry`` and ``gain`` (..., chunks) are stabiliser rescalings, constants for autograd. A
    scan with its own backward (the same recurrence run in reverse) keeps nothing but them, where
    autograd would keep every intermediate; and it overwrites the chunk summaries with the
    prefix summaries (nothing else needs them), because on CPU every fresh buffer of that size
    costs about as much in page faults as the product that filled it.
    Returns the summaries before each chunk (..., chunks, d + 1, m) and the one after the last.
    """

    @staticmethod
    def forward(
        ctx, initial: torch.Tensor, chunk_summaries: torch.Tensor, carry: torch.Tensor, gain: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        carry, gain = carry[..., None, None], gain[..., None, None]
        total = _prefix_scan_(initial, chunk_summaries, carry, gain)
        ctx.mark_dirty(chunk_summaries)
        ctx.save_for_backward(carry, gain)
        return chunk_summaries, total

    @staticmethod
    def backward(
        ctx, grad_previous: torch.Tensor, grad_final: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        carry, gain = ctx.saved_tensors
        grad_chunks = torch.empty_like(grad_previous)
        running = grad_final.clone()
        for index in reversed(range(grad_previous.shape[-3])):
            torch.mul(running, gain[..., index, :, :], out=grad_chunks[..., index, :, :])
            running.mul_(carry[..., index, :, :]).add_(grad_previous[..., index, :, :])
        return running, grad_chunks, None, None


class _Scores(torch.autograd.Function):
    """``q @ k^T``, with a backward that returns both gradients contiguous.

    Autograd's own backward returns the gradient of ``k`` transposed; the key features also get
    a (contiguous) gradient from the chunk summaries, and summing two layouts over ``(n, m)`` is
    slower than the products themselves.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q, k)
        return q @ k.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k = ctx.saved_tensors
        return grad @ k, grad.transpose(-1, -2) @ q


def causal_linear_attention_with_state(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int = 64,
    *,
    k_log_scale: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    state: CausalLinearState | None = None,
) -> tuple[torch.Tensor, CausalLinearState]:
    """Causal linear attention over ``n`` new positions, after the keys already in ``state``.

    Computed chunk by chunk: within a chunk of ``C`` positions a masked ``C x C`` product, across
    chunks a prefix summary ``(d + 1, m)``. Only those summaries (one per chunk), the ``C x C``
    blocks and O(n m) features are kept for the backward pass -- O(n (m + C + m d / C)) in all,
    never the O(n m d) per-position prefix sums. Returns the outputs (..., n, d) and the state
    after the last position, from which :func:`causal_linear_attention_step` continues.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    values, log_scale = _prepare_keys(v, k_log_scale, key_padding_mask)
    if state is None:
        state = CausalLinearState.empty(k.shape[:-2], k.shape[-1], v.shape[-1], dtype=values.dtype, device=v.device)
    n = q.shape[-2]
    size = max(1, min(chunk_size, n))
    padding = -n % size
    if padding:
        q, k, values = (nn.functional.pad(t, (0, 0, 0, padding)) for t in (q, k, values))
        log_scale = nn.functional.pad(log_scale, (0, padding), value=_lowest(log_scale.dtype))
    chunks = (n + padding) // size
    q, k, values = (t.unflatten(-2, (chunks, size)) for t in (q, k, values))
    log_scale = log_scale.unflatten(-1, (chunks, size))
    stable = log_scale.detach()

    # Running maxima: before each chunk (incl. the state's keys), and at each position.
    chunk_max, before, running = _running_maxima(stable, state.max_log_scale)

    # Within a chunk: query i weighs key j <= i by exp(log_scale_j - running_i) <= 1.
    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    decay = (log_scale.unsqueeze(-2) - running.unsqueeze(-1)).masked_fill_(~causal, -math.inf).exp_()
    out = (_Scores.apply(q, k) * decay) @ values

    # Across chunks: each chunk's keys summarised at its own maximum, then summed in order.
    weighted = values * torch.exp(log_scale - chunk_max.unsqueeze(-1)).unsqueeze(-1)
    chunk_summaries = weighted.transpose(-1, -2) @ k  # (..., chunks, d + 1, m)
    carry = torch.exp(before[..., :-1] - before[..., 1:])
    gain = torch.exp(chunk_max - before[..., 1:])
    previous, final = _PrefixSummaries.apply(state.summary, chunk_summaries, carry, gain)
    inter = q @ previous.transpose(-1, -2)
    # The summaries are relative to the maximum before the chunk; bring them to each query's own.
    out = torch.addcmul(out, inter, torch.exp(before[..., :-1].unsqueeze(-1) - running).unsqueeze(-1))
    out = _normalise(out).flatten(-3, -2)[..., :n, :]
    return out, CausalLinearState(final, before[..., -1])


def causal_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk_size: int = 64,
    *,
    k_log_scale: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal linear attention: position ``i`` attends to keys ``j <= i`` only (see
    :func:`causal_linear_attention_with_state`; same arguments, outputs (..., n, d))."""
    return causal_linear_attention_with_state(
        q, k, v, chunk_size, k_log_scale=k_log_scale, key_padding_mask=key_padding_mask
    )[0]


def causal_linear_attention_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    state: CausalLinearState,
    *,
    k_log_scale_t: torch.Tensor | None = None,
) -> tuple[torch.Tensor, CausalLinearState]:
    """One new position: ``q_t``, ``k_t`` (..., m), ``v_t`` (..., d) -> output (..., d), new state.

    Constant time and memory per token: the state is updated in place of a growing cache.
    """
    values = torch.cat([v_t, torch.ones_like(v_t[..., :1])], dim=-1)
    log_scale = torch.zeros_like(v_t[..., 0]) if k_log_scale_t is None else k_log_scale_t
    new_max = torch.maximum(state.max_log_scale, log_scale.detach())
    carry = torch.exp(state.max_log_scale - new_max)[..., None, None]
    gain = torch.exp(log_scale - new_max)[..., None, None]
    summary = torch.addcmul(state.summary * carry, values.unsqueeze(-1) * k_t.unsqueeze(-2), gain)
    out = _normalise((q_t.unsqueeze(-2) @ summary.transpose(-1, -2)).squeeze(-2))
    return out, CausalLinearState(summary, new_max)


# --- forward without autograd ----------------------------------------------------------------------
#
# When nothing needs a gradient, :class:`FavorAttention` computes features and attention in one
# function per mode that keeps no buffer for a backward and writes into as few fresh buffers as
# it can: on CPU the first touch of every fresh buffer of a few MiB costs page faults worth about
# as much as the product that fills it. Log-scales stay in base 2 throughout (``exp2`` is several
# times faster than ``exp`` on CPU). In causal mode the keys' features and the prefix summaries
# share one buffer, so that each chunk's queries meet both -- the in-chunk scores and the summary
# before the chunk -- in one product; in bidirectional mode the query features overwrite the keys'.


def _features_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Shifted features ``exp2(x @ weight - shift) + eps`` written into ``out`` (g, C, m); returns
    the shift (g, C), in base-2 units. ``x`` is (g, C, d), ``weight`` the base-2 projection (d, m)."""
    torch.bmm(x, weight.expand(x.shape[0], *weight.shape), out=out)
    shift = out.amax(dim=-1)
    out.sub_(shift.unsqueeze(-1)).exp2_()
    if eps:
        out.add_(eps)
    return shift


def _key_log_scale(shift: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The keys' base-2 log-scales from their shifts, in place (the constant ``-log m / 2`` cancels)."""
    return shift.sub_(k.square().sum(dim=-1), alpha=1 / (2 * math.sqrt(k.shape[-1]) * math.log(2)))


def _bidirectional_attention_inference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projection: torch.Tensor,
    *,
    eps: float,
    key_padding_mask: torch.Tensor | None,
) -> torch.Tensor:
    """:class:`FavorAttention` in bidirectional mode when nothing needs a gradient: the keys are
    summarised, then the query features overwrite the key features' buffer."""
    *batch, n_k, dim = k.shape
    groups, n_q = math.prod(batch), q.shape[-2]
    weight = (projection * (dim**-0.25 / math.log(2))).T
    features = k.new_empty(groups, max(n_k, n_q), projection.shape[0])
    k = k.reshape(groups, n_k, dim)
    keys = features[:, :n_k]
    log_scale = _key_log_scale(_features_into(keys, k, weight, eps), k)
    values, log_scale = _prepare_keys(v, log_scale.view(*batch, n_k), key_padding_mask)
    weights = (log_scale - log_scale.amax(dim=-1, keepdim=True)).exp2_()
    summary = (values * weights.unsqueeze(-1)).reshape(groups, n_k, -1).transpose(-1, -2) @ keys
    queries = features[:, :n_q]
    _features_into(queries, q.reshape(groups, n_q, dim), weight, eps)
    return _normalise(queries @ summary.transpose(-1, -2)).view(*batch, n_q, -1)


def _causal_attention_inference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projection: torch.Tensor,
    *,
    eps: float,
    chunk_size: int,
    key_padding_mask: torch.Tensor | None,
) -> torch.Tensor:
    """What :class:`FavorAttention` computes in causal mode (raw ``q``, ``k``, ``v`` (..., n, d)),
    for when nothing needs a gradient; the same maths as :func:`favor_features` followed by
    :func:`causal_linear_attention`."""
    *batch, n, dim = q.shape
    nb_features, dim_value = projection.shape[0], v.shape[-1]
    size = max(1, min(chunk_size, n))
    padding = -n % size
    values, _ = _prepare_keys(v, None, key_padding_mask)
    if padding:
        q, k, values = (nn.functional.pad(t, (0, 0, 0, padding)) for t in (q, k, values))
    chunks = (n + padding) // size
    groups = math.prod(batch) * chunks
    weight = (projection * (dim**-0.25 / math.log(2))).T
    lowest = _lowest(q.dtype)

    # Rows [:size] of each group: the chunk's key features; rows [size:]: the summary before it.
    keys_and_summaries = q.new_empty(groups, size + dim_value + 1, nb_features)
    keys = keys_and_summaries[:, :size]
    k = k.reshape(groups, size, dim)
    log_scale = _key_log_scale(_features_into(keys, k, weight, eps), k).view(-1, chunks, size)
    if key_padding_mask is not None:
        padded = key_padding_mask.view(key_padding_mask.shape[0], *([1] * (len(batch) - 1)), n)
        log_scale.view(*batch, -1)[..., :n].masked_fill_(padded, lowest)
    if padding:
        log_scale.view(*batch, -1)[..., n:] = lowest

    chunk_max, before, running = _running_maxima(log_scale, log_scale.new_full(log_scale.shape[:-2], lowest))
    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    decay = (log_scale.unsqueeze(-2) - running.unsqueeze(-1)).masked_fill_(~causal, -math.inf).exp2_()

    values = values.reshape(groups, size, dim_value + 1)
    weighted = values * (log_scale - chunk_max.unsqueeze(-1)).exp2_().view(groups, size, 1)
    summaries = keys_and_summaries[:, size:]
    torch.bmm(weighted.transpose(-1, -2), keys, out=summaries)
    summaries = summaries.view(-1, chunks, dim_value + 1, nb_features)
    carry = (before[..., :-1] - before[..., 1:]).exp2_()[..., None, None]
    gain = (chunk_max - before[..., 1:]).exp2_()[..., None, None]
    _prefix_scan_(torch.zeros_like(summaries[:, 0]), summaries, carry, gain)

    queries = q.new_empty(groups, size, nb_features)
    _features_into(queries, q.reshape(groups, size, dim), weight, eps)  # a query's scale cancels
    scores_and_inter = torch.bmm(queries, keys_and_summaries.transpose(-1, -2))
    scores = scores_and_inter[..., :size].mul_(decay.view(groups, size, size))
    out = torch.bmm(scores, values)
    to_running = (before[..., :-1, None] - running).exp2_().view(groups, size, 1)
    out.addcmul_(scores_and_inter[..., size:], to_running)
    return _normalise(out).view(*batch, -1, dim_value)[..., :n, :]


# --- module ------------------------------------------------------------------------------------


class FavorAttention(nn.Module):
    """FAVOR+ attention over per-head queries, keys and values of shape (batch, heads, n, dim_head).

    Holds its random projection as a buffer (one state-dict entry, saved with the model) and
    redraws it on request (:meth:`redraw_projection`); a model decides when. Features and the
    attention itself are computed in float32 (float64 stays float64), also under autocast, and
    the output comes back in the values' dtype.
    """

    projection: torch.Tensor

    def __init__(
        self,
        dim_head: int,
        nb_features: int | None = None,
        *,
        causal: bool = False,
        chunk_size: int = 64,
        eps: float = 1e-4,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.dim_head = dim_head
        self.nb_features = nb_features or default_nb_features(dim_head)
        self.causal = causal
        self.chunk_size = chunk_size
        self.eps = eps
        self.register_buffer(
            "projection",
            orthogonal_gaussian_projection(self.nb_features, dim_head, generator=generator, dtype=torch.float32),
        )

    def extra_repr(self) -> str:
        return f"dim_head={self.dim_head}, nb_features={self.nb_features}, causal={self.causal}"

    @torch.no_grad()
    def redraw_projection(self, generator: torch.Generator | None = None) -> None:
        """Draw a new projection into the existing buffer (same tensor, device and dtype)."""
        drawn = orthogonal_gaussian_projection(self.nb_features, self.dim_head, generator=generator)
        self.projection.copy_(drawn)

    def _features(self, x: torch.Tensor) -> FavorFeatures:
        dtype = torch.promote_types(x.dtype, torch.float32)
        return favor_features(x.to(dtype), self.projection.to(dtype), eps=self.eps)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend; ``key_padding_mask`` (batch, n_k) is True on padded keys."""
        dtype = torch.promote_types(k.dtype, torch.float32)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, self.projection))
        with torch.autocast(q.device.type, enabled=False):
            values = v.to(dtype)
            if not needs_grad:
                inputs = (q.to(dtype), k.to(dtype), values, self.projection.to(dtype))
                if self.causal:
                    out = _causal_attention_inference(
                        *inputs, eps=self.eps, chunk_size=self.chunk_size, key_padding_mask=key_padding_mask
                    )
                else:
                    out = _bidirectional_attention_inference(*inputs, eps=self.eps, key_padding_mask=key_padding_mask)
            elif self.causal:
                key = self._features(k)
                out = causal_linear_attention(
                    self._features(q).features, key.features, values, self.chunk_size,
                    k_log_scale=key.log_scale, key_padding_mask=key_padding_mask,
                )
            else:
                key = self._features(k)
                summary = _key_summary(key.features, values, key.log_scale, key_padding_mask)
                del key
                out = _attend(self._features(q).features, summary)
        return out.to(v.dtype)

    def step(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: CausalLinearState | None = None
    ) -> tuple[torch.Tensor, CausalLinearState]:
        """Continue causal attention over new positions (batch, heads, t, dim_head) after ``state``.

        ``state=None`` starts a sequence. One position (t = 1) costs the same time and memory
        however long the sequence already is; a longer block (a prompt) goes chunkwise.
        The outputs equal those of :meth:`forward` over the whole sequence.
        """
        with torch.autocast(q.device.type, enabled=False):
            query, key = self._features(q).features, self._features(k)
            values = v.to(query.dtype)
            if state is None:
                state = CausalLinearState.empty(
                    k.shape[:-2], self.nb_features, v.shape[-1], dtype=query.dtype, device=v.device
                )
            if q.shape[-2] == 1:
                out, state = causal_linear_attention_step(
                    query[..., 0, :], key.features[..., 0, :], values[..., 0, :], state,
                    k_log_scale_t=key.log_scale[..., 0],
                )
                out = out.unsqueeze(-2)
            else:
                out, state = causal_linear_attention_with_state(
                    query, key.features, values, self.chunk_size, k_log_scale=key.log_scale, state=state
                )
        return out.to(v.dtype), state
