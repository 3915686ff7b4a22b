"""FAVOR+ attention tuned for speed: tiles of (batch, head) pairs, with their own backward.

The same maths as :func:`~foundry_plugin_performer.reference.favor_features` followed by
:func:`~foundry_plugin_performer.reference.linear_attention` or
:func:`~foundry_plugin_performer.reference.causal_linear_attention` (the tests compare them), from raw
queries, keys and values. :func:`tiled_attention` is the entry: when nothing needs a gradient, functions
that keep no buffer for a backward pass; under autograd :class:`_CausalAttention` or
:class:`_BidirectionalAttention`, which keep only what their own backward needs.

Log-scales stay in base 2 throughout (``exp2`` is several times faster than ``exp`` on CPU). On the
CPU the (batch, head) pairs are processed a few at a time, in tiles of about :data:`_TILE_BYTES` of
features: each tile's features are consumed by the products that follow while they are still in the
cache, and the buffers of one tile are reused by the next instead of fresh ones whose first touch (page
faults) costs about as much as the product that fills them. Why each piece is shaped as it is:
``docs/plugins/performer.md`` (*Why the code is shaped as it is*).
"""

from __future__ import annotations

import math
import threading
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from foundry_plugin_performer.reference import CausalLinearState, empty_to_one, lowest, padding_mask

__all__ = ["tiled_attention"]


_TILE_BYTES = 1 << 20


_SCRATCH_KEPT_BYTES = 32 << 20  # CPU scratch a thread keeps between calls


_kept_scratch = threading.local()


class _Scratch:
    """Buffers that the tiles of a call reuse, by name: on CPU, memory touched for the first time
    costs page faults worth about as much as the product that fills it. On CPU the buffers are also
    kept for the thread's next call while they take at most :data:`_SCRATCH_KEPT_BYTES` in all
    (:meth:`done` drops them otherwise); outputs never live in them."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self.buffers: dict[str, torch.Tensor] = {}
        if like.device.type == "cpu":
            pools = _kept_scratch.__dict__.setdefault("pools", {})
            self.buffers = pools.setdefault(like.dtype, self.buffers)

    def __call__(self, name: str, *shape: int) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = self.buffers[name] = self.like.new_empty(size)
        return buffer[:size].view(shape)

    def done(self) -> None:
        if sum(b.numel() * b.element_size() for b in self.buffers.values()) > _SCRATCH_KEPT_BYTES:
            self.buffers.clear()


def _features_into(out: torch.Tensor, inputs: Sequence[torch.Tensor], weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Shifted features ``exp2(x @ weight - shift) + eps`` of each input ``x`` (g, n, d) written into
    ``out[i]`` (len(inputs), g, n, m), one product per input and one pass of each element-wise step
    for all; returns the shifts (len(inputs), g, n), in base-2 units. ``weight`` is the base-2
    projection (d, m)."""
    for x, logits in zip(inputs, out, strict=True):
        torch.matmul(x, weight, out=logits)
    shift = out.amax(dim=-1)
    out.sub_(shift.unsqueeze(-1)).exp2_()
    if eps:
        out.add_(eps)
    return shift


def _key_log_scale(shift: torch.Tensor, k: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
    """The keys' base-2 log-scales from their shifts, in place (the constant ``-log m / 2`` cancels);
    ``excluded`` keys (padding) get the lowest, so they never set a maximum. ``k`` (..., d) holds
    the keys in the order of ``shift``, whatever its shape."""
    squared_norm = k.square().sum(dim=-1).reshape(shift.shape)
    log_scale = shift.sub_(squared_norm, alpha=1 / (2 * math.sqrt(k.shape[-1]) * math.log(2)))
    if excluded is not None:
        log_scale.masked_fill_(excluded.reshape(log_scale.shape), lowest(log_scale.dtype))
    return log_scale


def _bidirectional_tile(
    q: torch.Tensor, k: torch.Tensor, values: torch.Tensor, excluded: torch.Tensor | None,
    weight: torch.Tensor, eps: float, key_features: torch.Tensor, query_features: torch.Tensor,
    out: torch.Tensor, denominators: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bidirectional attention of ``g`` (batch, head) pairs: ``q`` (g, n_q, d), ``k`` (g, n_k, d),
    ``values`` (g, n_k, d + 1), ``excluded`` (g, n_k) or None; the features are written into
    ``key_features`` (g, n_k, m) and then ``query_features`` (g, n_q, m), which may share memory,
    the outputs into ``out`` (g, n_q, d) and their denominators into ``denominators`` (g, 1, n_q).

    Returns the key summary (g, d + 1, m) and the keys' weights (g, n_k), relative to the largest.
    """
    log_scale = _key_log_scale(_features_into(key_features[None], [k], weight, eps)[0], k, excluded)
    weights = log_scale.sub_(log_scale.amax(dim=-1, keepdim=True)).exp2_()
    summary = (values * weights.unsqueeze(-1)).transpose(-1, -2) @ key_features
    _features_into(query_features[None], [q], weight, eps)
    _divide_(*_against_summaries(query_features, summary, out, denominators))
    return summary, weights


def _against_summaries(
    rows: torch.Tensor, summaries: torch.Tensor, numerators: torch.Tensor, denominators: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows @ summaries^T`` split into numerators (g, n, d) and denominators (g, 1, n), written into the
    given tensors: ``rows`` (g, n, k) are query features (or scores), ``summaries`` (g, d + 1, k) hold
    the weighted values and, in the last row, the normaliser. Two products rather than one of width
    ``d + 1``, which MKL runs about a fifth slower than width ``d``."""
    torch.bmm(rows, summaries[:, :-1].transpose(-1, -2), out=numerators)
    torch.bmm(summaries[:, -1:], rows.transpose(-1, -2), out=denominators)
    return numerators, denominators


def _divide_(numerators: torch.Tensor, denominators: torch.Tensor) -> None:
    """Divide numerators (g, n, d) in place by denominators (g, 1, n), whose empty ones are first set
    to 1 in place (:func:`~foundry_plugin_performer.reference.empty_to_one`): a query with no (unpadded) key gets zeros."""
    numerators.div_(empty_to_one(denominators, in_place=True).transpose(-1, -2))


def _through_features_(grad: torch.Tensor, features: torch.Tensor, eps: float, scratch: _Scratch) -> torch.Tensor:
    """The gradient with respect to shifted features (g, n, m), in place, turned into the gradient with
    respect to their logits: times ``d features / d logits = features - eps`` (natural units)."""
    return grad.mul_(torch.sub(features, eps, out=scratch("feature slopes", *features.shape)))


def _tiles(groups: int, length: int, nb_features: int, like: torch.Tensor) -> list[slice]:
    """Consecutive (batch, head) pairs whose features take about :data:`_TILE_BYTES` (at least one
    pair) on the CPU; on an accelerator, where each tile's few dozen small kernels would cost more
    launches than the cache saves, all pairs in one tile. (Tiles of 128 MiB there, which would bound
    a backward pass's temporaries, made causal and bidirectional attention at n = 16384 up to twice
    as slow on an H200.)"""
    if like.device.type != "cpu":
        return [slice(0, groups)]
    step = max(1, _TILE_BYTES // (length * nb_features * like.element_size()))
    return [slice(start, start + step) for start in range(0, groups, step)]


def _flat_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None, multiple: int = 1,
    scratch: _Scratch | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``q``, ``k`` and the values with their ones column, as (groups, n, .) with the (batch, head)
    pairs flattened, and the excluded keys (groups, n_k) or None. Padded keys' values are zero;
    sequences are padded at the end to a ``multiple`` of positions, which are excluded too. The
    values go into ``scratch`` if given (no autograd)."""
    *batch, n_k, _ = k.shape
    groups = math.prod(batch)
    ones = torch.ones_like(v[..., :1])
    into = None if scratch is None else scratch("values", *ones.shape[:-1], v.shape[-1] + 1)
    values = torch.cat([v, ones], dim=-1, out=into)
    excluded = None
    if key_padding_mask is not None:
        padded = padding_mask(key_padding_mask, batch)
        values.masked_fill_(padded.unsqueeze(-1), 0.0)
        excluded = padded.reshape(groups, n_k)
    padding = -n_k % multiple
    if padding:
        q, k, values = (nn.functional.pad(t, (0, 0, 0, padding)) for t in (q, k, values))
        excluded = nn.functional.pad(
            torch.zeros(groups, n_k, dtype=torch.bool, device=k.device) if excluded is None else excluded,
            (0, padding), value=True,
        )
    return (*(t.reshape(groups, -1, t.shape[-1]) for t in (q, k, values)), excluded)  # type: ignore[return-value]


def _base2_weight(projection: torch.Tensor) -> torch.Tensor:
    """The projection (m, d) as the (d, m) matrix whose products are the base-2 feature logits."""
    return (projection * (projection.shape[-1] ** -0.25 / math.log(2))).T


class _CausalBuffers(NamedTuple):
    """What the causal tile writes besides its outputs, and a backward pass reads, for ``g`` (batch,
    head) pairs of ``n`` positions in chunks of ``C``: the query and key features (2, g, n, m), the
    prefix summaries (g, chunks, d + 1, m), the in-chunk scores with their decay (g * chunks, C, C)
    and the denominators (g * chunks, 1, C)."""

    features: torch.Tensor
    prefix: torch.Tensor
    scores: torch.Tensor
    denominators: torch.Tensor

    @classmethod
    def of(cls, make: Callable[..., torch.Tensor], g: int, n: int, size: int, dim_value: int, nb_features: int) -> _CausalBuffers:
        """Buffers from ``make(name, *shape)``: a :class:`_Scratch`, or fresh tensors to keep."""
        chunks = n // size
        return cls(
            make("features", 2, g, n, nb_features), make("prefix summaries", g, chunks, dim_value, nb_features),
            make("scores", g * chunks, size, size), make("denominators", g * chunks, 1, size),
        )

    def tile(self, rows: slice, chunks: int) -> _CausalBuffers:
        """The buffers of the pairs ``rows``."""
        chunk_rows = slice(rows.start * chunks, rows.stop * chunks)
        return _CausalBuffers(self.features[:, rows], self.prefix[rows], self.scores[chunk_rows], self.denominators[chunk_rows])


def _causal_tile(
    q: torch.Tensor, k: torch.Tensor, values: torch.Tensor, excluded: torch.Tensor | None,
    weight: torch.Tensor, eps: float, size: int, scratch: _Scratch, out: torch.Tensor, kept: _CausalBuffers,
    initial: CausalLinearState | None = None, *, final: bool = False,
) -> tuple[torch.Tensor, CausalLinearState | None]:
    """Causal attention of ``g`` (batch, head) pairs, ``n`` a multiple of the chunk ``size``
    (arguments as in :func:`_bidirectional_tile`), written into ``out`` (g, n, d): the same maths as
    :func:`favor_features` followed by :func:`~foundry_plugin_performer.reference.causal_linear_attention`. One product per
    input gives the features of every position; within a chunk, scores; across chunks, the prefix
    summaries. Writes ``kept`` (for a backward pass; scratch views when there is none), takes other
    intermediate buffers from ``scratch``, and computes the numerators in ``out`` itself.

    ``initial`` (summary (g, d + 1, m), maximum (g,)) holds earlier keys, with log-scales in base 2
    and without the constant ``-log m / 2`` (as here). Returns the keys' log-scales (g, n) and, if
    ``final``, the state after the last position in the same units (else None)."""
    g, n, dim = q.shape
    chunks, dim_value, nb_features = n // size, values.shape[-1], weight.shape[-1]
    groups = g * chunks
    shift = _features_into(kept.features, [q, k], weight, eps)
    queries, keys = kept.features.view(2, groups, size, nb_features)
    log_scale = _key_log_scale(shift[1], k, excluded).view(g, chunks, size)

    earlier_max = log_scale.new_full((g,), lowest(q.dtype)) if initial is None else initial.max_log_scale
    chunk_max, before, running = _running_maxima(log_scale, earlier_max)
    values = values.reshape(groups, size, dim_value)
    weighted = torch.mul(
        values, (log_scale - chunk_max.unsqueeze(-1)).exp2_().view(groups, size, 1),
        out=scratch("weighted values", groups, size, dim_value),
    )
    chunk_summaries = torch.bmm(
        weighted.transpose(-1, -2), keys, out=scratch("chunk summaries", groups, dim_value, nb_features)
    )
    previous, after = _prefix_summaries(
        chunk_summaries.view(g, chunks, dim_value, -1), chunk_max, before, None if initial is None else initial.summary,
        final=final, out=kept.prefix,
    )

    decay = _lower_decay(
        log_scale, running, diagonal=0, out=scratch("decay", g, chunks, size, size)
    ).view(groups, size, size)
    scores = torch.bmm(queries, keys.transpose(-1, -2), out=kept.scores).mul_(decay)
    numerators, denominators = _against_summaries(
        scores, values.transpose(-1, -2), out.view(groups, size, dim_value - 1), kept.denominators
    )
    # Earlier chunks: their summaries are relative to the maximum before the chunk; bring them to each query's own.
    earlier_numerators, earlier_denominators = _against_summaries(
        queries, previous.view(groups, dim_value, -1), scratch("earlier numerators", groups, size, dim_value - 1),
        scratch("earlier denominators", groups, 1, size),
    )
    factor = (before[..., :-1, None] - running).exp2_().view(groups, 1, size)
    numerators.addcmul_(earlier_numerators, factor.transpose(-1, -2))
    _divide_(numerators, denominators.addcmul_(earlier_denominators, factor))
    return log_scale.view(g, n), None if after is None else CausalLinearState(after, before[:, -1])


def _causal_tile_backward(
    grad: torch.Tensor, out: torch.Tensor, k: torch.Tensor, values: torch.Tensor, excluded: torch.Tensor | None,
    log_scale: torch.Tensor, kept: _CausalBuffers, weight: torch.Tensor, eps: float, size: int, scratch: _Scratch,
    grad_q: torch.Tensor, grad_k: torch.Tensor, grad_values: torch.Tensor,
) -> None:
    """The backward pass of :func:`_causal_tile` for ``g`` pairs: from the outputs' gradient ``grad``
    (g, n, d), the gradients of the queries, keys and values (the ones column's is not used), written
    into ``grad_q``, ``grad_k`` and ``grad_values``. ``weight`` is the natural-log projection (m, d).

    The same products as autograd through :func:`causal_linear_attention` would run, transposed,
    with the decays recomputed from the log-scales. Log-scale gradients are in natural units: a
    decay ``exp2(l_j - M)`` is ``exp(ln 2 l_j - ...)``, and ``ln 2 l_j`` carries ``-|k_j|^2 / (2 sqrt(d))``.
    """
    g, n, dim = k.shape
    chunks, dim_value, nb_features = n // size, values.shape[-1], weight.shape[0]
    groups = g * chunks
    queries, keys = kept.features.view(2, groups, size, nb_features)
    scores, prefix = kept.scores, kept.prefix.view(groups, dim_value, nb_features)
    chunked_log_scale = log_scale.view(g, chunks, size)
    chunk_max, before, running = _running_maxima(chunked_log_scale, log_scale.new_full((g,), lowest(k.dtype)))
    # d out / d (numerator, denominator): out = numerator / denominator.
    grad_nd = torch.cat(
        [grad, -(grad * out).sum(dim=-1, keepdim=True)], dim=-1, out=scratch("grad numerators", g, n, dim_value)
    ).div_(kept.denominators.view(g, n, 1)).view(groups, size, dim_value)
    values = values.reshape(groups, size, dim_value)
    chunk_grad_values = grad_values.view(groups, size, dim_value)

    # Within a chunk: scores = (queries @ keys^T) * decay, numerators = scores @ values.
    grad_scores = torch.bmm(grad_nd, values.transpose(-1, -2), out=scratch("grad scores", groups, size, size))
    torch.bmm(scores.transpose(-1, -2), grad_nd, out=chunk_grad_values)
    grad_log_scale = (grad_scores * scores).sum(dim=-2)
    decay = _lower_decay(
        chunked_log_scale, running, diagonal=0, out=scratch("decay", g, chunks, size, size)
    ).view(groups, size, size)
    grad_products = grad_scores.mul_(decay)
    grad_queries = torch.bmm(grad_products, keys, out=scratch("grad query features", groups, size, nb_features))
    grad_keys = torch.bmm(
        grad_products.transpose(-1, -2), queries, out=scratch("grad key features", groups, size, nb_features)
    )

    # Earlier chunks: factor * (queries @ prefix^T).
    factor = (before[..., :-1, None] - running).exp2_().view(groups, size, 1)
    scaled = torch.mul(grad_nd, factor, out=scratch("scaled grad numerators", groups, size, dim_value))
    grad_queries.baddbmm_(scaled, prefix)
    grad_prefix = torch.bmm(scaled.transpose(-1, -2), queries, out=scratch("grad prefix", groups, dim_value, nb_features))
    grad_chunks, _ = _prefix_summaries_backward(
        grad_prefix.view(g, chunks, dim_value, nb_features), None, chunk_max, before
    )

    # Chunk summaries: (values * w)^T @ keys, w = exp2(l - chunk max).
    key_weights = (chunked_log_scale - chunk_max.unsqueeze(-1)).exp2_().view(groups, size, 1)
    weighted = torch.mul(values, key_weights, out=scratch("weighted values", groups, size, dim_value))
    grad_chunks = grad_chunks.view(groups, dim_value, nb_features)
    grad_keys.baddbmm_(weighted, grad_chunks)
    grad_weighted = torch.bmm(keys, grad_chunks.transpose(-1, -2), out=scratch("grad weighted", groups, size, dim_value))
    chunk_grad_values.addcmul_(grad_weighted, key_weights)
    # Excluded keys' values are zero, so their log-scales got no gradient above.
    grad_log_scale.addcmul_((grad_weighted * values).sum(dim=-1), key_weights.squeeze(-1))

    # The feature maps: d features / d logits = features - eps.
    torch.matmul(_through_features_(grad_queries, queries, eps, scratch).view(g, n, nb_features), weight, out=grad_q)
    torch.matmul(_through_features_(grad_keys, keys, eps, scratch).view(g, n, nb_features), weight, out=grad_k)
    grad_k.addcmul_(k, grad_log_scale.view(g, n, 1), value=-1 / math.sqrt(dim))


class _CausalAttention(torch.autograd.Function):
    """FAVOR+ causal attention from raw queries, keys and values, tile by tile in both passes.

    The same computation as :func:`favor_features` and :func:`causal_linear_attention` under
    autograd; keeps the features, the prefix summaries, the in-chunk scores, the denominators, the
    keys' log-scales and the output, O(n (m + C) + n m d / C) per pair, and its backward
    (:func:`_causal_tile_backward`) works tile by tile too. Inputs as from :func:`_flat_inputs`,
    ``n`` a multiple of ``size``; returns the outputs (groups, n, d).
    """

    @staticmethod
    def forward(ctx, q, k, values, excluded, projection, eps, size):  # type: ignore[override]
        weight = _base2_weight(projection)
        (groups, n, _), nb_features = q.shape, weight.shape[-1]
        kept = _CausalBuffers.of(lambda _, *shape: q.new_empty(shape), groups, n, size, values.shape[-1], nb_features)
        out, log_scale = q.new_empty(groups, n, values.shape[-1] - 1), q.new_empty(groups, n)
        scratch = _Scratch(q)
        for rows in _tiles(groups, n, nb_features, q):
            log_scale[rows], _ = _causal_tile(
                q[rows], k[rows], values[rows], None if excluded is None else excluded[rows], weight, eps, size,
                scratch, out[rows], kept.tile(rows, n // size),
            )
        scratch.done()
        ctx.save_for_backward(k, values, projection, log_scale, out, *kept)
        ctx.eps, ctx.size, ctx.excluded = eps, size, excluded
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        k, values, projection, log_scale, out, *kept = ctx.saved_tensors
        kept, (groups, n, dim) = _CausalBuffers(*kept), k.shape
        weight = projection * dim**-0.25  # natural-log logits: x @ weight.T
        grad_q, grad_k, grad_values = k.new_empty(k.shape), k.new_empty(k.shape), values.new_empty(values.shape)
        scratch = _Scratch(k)
        for rows in _tiles(groups, n, weight.shape[0], k):
            _causal_tile_backward(
                grad_out[rows], out[rows], k[rows], values[rows], None if ctx.excluded is None else ctx.excluded[rows],
                log_scale[rows], kept.tile(rows, n // ctx.size), weight, ctx.eps, ctx.size, scratch,
                grad_q[rows], grad_k[rows], grad_values[rows],
            )
        scratch.done()
        if ctx.excluded is not None:
            grad_values.masked_fill_(ctx.excluded.unsqueeze(-1), 0.0)
        return grad_q, grad_k, grad_values, None, None, None, None


def _attention_inference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor, *,
    eps: float, causal: bool, chunk_size: int, key_padding_mask: torch.Tensor | None,
    state: CausalLinearState | None = None, keep_state: bool = False,
) -> tuple[torch.Tensor, CausalLinearState | None]:
    """What :class:`FavorAttention` computes from raw ``q``, ``k``, ``v`` (..., n, d), for when
    nothing needs a gradient, tile by tile. Causal attention continues
    after the keys in ``state`` (None: none), and returns the state after the last position if
    ``keep_state`` (else None), as :meth:`FavorAttention.step` does."""
    *batch, n_q, _ = q.shape
    size = max(1, min(chunk_size, n_q))
    scratch = _Scratch(q)
    q, k, values, excluded = _flat_inputs(q, k, v, key_padding_mask, size if causal else 1, scratch)
    weight = _base2_weight(projection)
    out = q.new_empty(*q.shape[:2], v.shape[-1])
    initial = None if state is None else _state_in_base2(state, weight.shape[-1])
    summaries, maxima = [], []
    for rows in _tiles(q.shape[0], max(q.shape[1], k.shape[1]), weight.shape[-1], q):
        mask = None if excluded is None else excluded[rows]
        if causal:
            kept = _CausalBuffers.of(scratch, q[rows].shape[0], q.shape[1], size, values.shape[-1], weight.shape[-1])
            _, after = _causal_tile(
                q[rows], k[rows], values[rows], mask, weight, eps, size, scratch, out[rows], kept,
                None if initial is None else CausalLinearState(initial.summary[rows], initial.max_log_scale[rows]),
                final=keep_state,
            )
            if after is not None:
                summaries.append(after.summary)
                maxima.append(after.max_log_scale)
        else:
            # Keys' features first, consumed by the summary, then the queries' in the same memory.
            g, nb_features = q[rows].shape[0], weight.shape[-1]
            features = scratch("features", g * max(q.shape[1], k.shape[1]) * nb_features)
            lengths = (k.shape[1], q.shape[1])
            key_features, query_features = (features[: g * n * nb_features].view(g, n, nb_features) for n in lengths)
            _bidirectional_tile(
                q[rows], k[rows], values[rows], mask, weight, eps, key_features, query_features,
                out[rows], scratch("denominators", g, 1, q.shape[1]),
            )
    scratch.done()
    final = None
    if keep_state:
        final = _state_in_natural(torch.cat(summaries), torch.cat(maxima), batch, weight.shape[-1])
    return out.view(*batch, -1, v.shape[-1])[..., :n_q, :], final


def _state_in_base2(state: CausalLinearState, nb_features: int) -> CausalLinearState:
    """``state`` as :meth:`FavorAttention.step` keeps it, flattened to (groups, d + 1, m) and (groups,),
    its maximum in the tiles' units: base 2, without the constant ``-log m / 2`` of :func:`favor_features`
    (the summary, relative to the maximum, is the same in both)."""
    maximum = (state.max_log_scale + 0.5 * math.log(nb_features)) / math.log(2)
    maximum = maximum.clamp(min=lowest(maximum.dtype))  # an empty state's "log of zero" stays finite
    return CausalLinearState(state.summary.reshape(-1, *state.summary.shape[-2:]), maximum.reshape(-1))


def _state_in_natural(
    summary: torch.Tensor, maximum: torch.Tensor, batch: list[int], nb_features: int
) -> CausalLinearState:
    """The inverse of :func:`_state_in_base2`, shaped for ``batch``."""
    maximum = maximum * math.log(2) - 0.5 * math.log(nb_features)
    return CausalLinearState(summary.view(*batch, *summary.shape[-2:]), maximum.view(batch))


class _BidirectionalAttention(torch.autograd.Function):
    """FAVOR+ bidirectional attention from raw queries, keys and values, tile by tile in both passes.

    The same computation as :func:`favor_features` and :func:`linear_attention` under autograd,
    with the features of a tile consumed while they are in the cache, and a backward pass that
    works tile by tile too. Keeps the features, the key summaries and weights, and the output.
    Inputs as from :func:`_flat_inputs`; returns the outputs (groups, n_q, d).
    """

    @staticmethod
    def forward(ctx, q, k, values, excluded, projection, eps):  # type: ignore[override]
        weight = _base2_weight(projection)
        groups, n_k, nb_features = k.shape[0], k.shape[1], projection.shape[0]
        key_features = q.new_empty(groups, n_k, nb_features)
        query_features = q.new_empty(groups, q.shape[1], nb_features)
        out = q.new_empty(groups, q.shape[1], values.shape[-1] - 1)
        denominators = q.new_empty(groups, 1, q.shape[1])
        summaries = q.new_empty(groups, values.shape[-1], nb_features)
        weights = q.new_empty(groups, n_k)
        for rows in _tiles(groups, max(n_k, q.shape[1]), nb_features, q):
            summaries[rows], weights[rows] = _bidirectional_tile(
                q[rows], k[rows], values[rows], None if excluded is None else excluded[rows], weight, eps,
                key_features[rows], query_features[rows], out[rows], denominators[rows],
            )
        ctx.save_for_backward(k, values, projection, key_features, query_features, summaries, weights, out, denominators)
        ctx.eps, ctx.excluded = eps, excluded
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        k, values, projection, key_features, query_features, summaries, weights, out, denominators = ctx.saved_tensors
        eps, dim = ctx.eps, k.shape[-1]
        weight = projection * dim**-0.25  # natural-log logits: x @ weight.T
        grad_q, grad_k = k.new_empty(*query_features.shape[:2], dim), k.new_empty(k.shape)
        grad_values = values.new_empty(values.shape)
        scratch = _Scratch(k)
        for rows in _tiles(k.shape[0], max(k.shape[1], out.shape[1]), weight.shape[0], k):
            grad, tile_out, denominator = grad_out[rows], out[rows], denominators[rows].transpose(-1, -2)
            queries, keys, summary, key_weights = query_features[rows], key_features[rows], summaries[rows], weights[rows]
            (g, n_q, nb_features), n_k, dim_value = queries.shape, keys.shape[1], summary.shape[1]
            # d out / d (numerator, denominator): out = numerator / denominator.
            grad_nd = torch.cat(
                [grad, -(grad * tile_out).sum(dim=-1, keepdim=True)], dim=-1,
                out=scratch("grad numerators", g, n_q, dim_value),
            ).div_(denominator)
            grad_summary = torch.bmm(
                grad_nd.transpose(-1, -2), queries, out=scratch("grad summary", g, dim_value, nb_features)
            )
            grad_features = torch.bmm(grad_nd, summary, out=scratch("grad features", g, n_q, nb_features))
            torch.matmul(_through_features_(grad_features, queries, eps, scratch), weight, out=grad_q[rows])
            weighted = torch.mul(
                values[rows], key_weights.unsqueeze(-1), out=scratch("weighted values", g, n_k, dim_value)
            )
            grad_features = torch.bmm(weighted, grad_summary, out=scratch("grad features", g, n_k, nb_features))
            grad_key = torch.matmul(_through_features_(grad_features, keys, eps, scratch), weight, out=grad_k[rows])
            grad_weighted = torch.bmm(
                keys, grad_summary.transpose(-1, -2), out=scratch("grad weighted", g, n_k, dim_value)
            )
            torch.mul(grad_weighted, key_weights.unsqueeze(-1), out=grad_values[rows])
            # The weights exp(log_scale - max) carry the keys' -|k|^2 / (2 sqrt(d)); the max is a constant.
            grad_log_scale = (grad_weighted * values[rows]).sum(dim=-1).mul_(key_weights)
            grad_key.addcmul_(k[rows], grad_log_scale.unsqueeze(-1), value=-1 / math.sqrt(dim))
        scratch.done()
        if ctx.excluded is not None:
            grad_values.masked_fill_(ctx.excluded.unsqueeze(-1), 0.0)
        return grad_q, grad_k, grad_values, None, None, None


def _attention_with_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor, *,
    eps: float, causal: bool, chunk_size: int, key_padding_mask: torch.Tensor | None,
) -> torch.Tensor:
    """:class:`_CausalAttention` or :class:`_BidirectionalAttention` on raw ``q``, ``k``, ``v``
    (..., n, d): what :class:`FavorAttention` computes under autograd when the projection needs no
    gradient (arguments as in :func:`_attention_inference`)."""
    *batch, n_q, _ = q.shape
    size = max(1, min(chunk_size, n_q))
    flat_q, flat_k, values, excluded = _flat_inputs(q, k, v, key_padding_mask, size if causal else 1)
    if causal:
        out = _CausalAttention.apply(flat_q, flat_k, values, excluded, projection, eps, size)
    else:
        out = _BidirectionalAttention.apply(flat_q, flat_k, values, excluded, projection, eps)
    return out.view(*batch, -1, v.shape[-1])[..., :n_q, :]


# --- the causal pieces: running maxima, in-chunk decays, prefix summaries -----------------------


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


def _lower_decay(
    columns: torch.Tensor, rows: torch.Tensor, *, diagonal: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``exp2(columns_j - rows_i)`` (..., i, j) on and below ``diagonal`` of the last two dimensions,
    0 above (into ``out`` if given).

    Each ``rows_i`` is a running maximum that covers every ``columns_j`` kept, so no entry exceeds 1.
    """
    # Adding a (0 | -inf) matrix is several times faster than ``masked_fill_`` with a broadcast mask;
    # no difference is +inf (log-scales are finite and far from the largest float), so no NaN.
    above = torch.full((rows.shape[-1], columns.shape[-1]), -math.inf, dtype=rows.dtype, device=rows.device)
    return torch.sub(columns.unsqueeze(-2), rows.unsqueeze(-1), out=out).add_(above.triu_(diagonal + 1)).exp2_()


_PREFIX_BLOCK = 16  # chunks whose prefix summaries one product computes


def _block_decay(
    chunk_max: torch.Tensor, before: torch.Tensor, start: int, stop: int, *, carried: bool, following: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The weights that take the summary before chunk ``start`` and the chunks ``start:stop`` to the
    summaries before chunks ``start:stop`` and before chunk ``stop``: (g, B, B) strictly lower
    ``exp2(chunk_max_c - before_r)``; the (g, 1, B) row for ``stop`` if ``following``; and if
    ``carried``, the carried summary's (g, B) and (g,) factors ``exp2(before_start - before_r)``
    (None when not asked for). No weight exceeds 1."""
    decay = _lower_decay(chunk_max[:, start:stop], before[:, start:stop], diagonal=-1)
    last_row = (chunk_max[:, None, start:stop] - before[:, stop, None, None]).exp2_() if following else None
    if not carried:
        return decay, last_row, None, None
    return decay, last_row, (before[:, start, None] - before[:, start:stop]).exp2_(), (before[:, start] - before[:, stop]).exp2_()


def _prefix_summaries(
    chunk_summaries: torch.Tensor, chunk_max: torch.Tensor, before: torch.Tensor, initial: torch.Tensor | None,
    *, final: bool, out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The summaries before each chunk (g, chunks, R, m; into ``out`` if given) and, if ``final``,
    the one after the last (g, R, m).

    ``chunk_summaries`` (g, chunks, R, m) holds each chunk's keys weighted relative to its own
    maximum ``chunk_max`` (g, chunks); ``before`` (g, chunks + 1) is the running maximum before
    each chunk and after the last (:func:`_running_maxima`); ``initial`` (g, R, m) is the summary
    of earlier keys, relative to ``before[:, 0]`` (None: there are none); log-scales in base 2.

    The summary before chunk ``r`` is ``sum_{c < r} exp2(chunk_max_c - before_r) K_c`` (plus the
    initial one's share): a product with a lower-triangular matrix whose entries never exceed 1,
    one per block of :data:`_PREFIX_BLOCK` chunks, the summary reached at a block's end carried
    into the next.
    """
    g, chunks, *shape = chunk_summaries.shape
    flat = chunk_summaries.view(g, chunks, -1)
    prefix = chunk_summaries.new_empty(g, chunks, *shape) if out is None else out
    carried = None if initial is None else initial.reshape(g, -1)
    for start in range(0, chunks, _PREFIX_BLOCK):
        stop = min(chunks, start + _PREFIX_BLOCK)
        following = stop < chunks or final
        decay, last_row, carried_factor, carried_last = _block_decay(
            chunk_max, before, start, stop, carried=carried is not None, following=following
        )
        block = torch.bmm(decay, flat[:, start:stop], out=prefix[:, start:stop].view(g, stop - start, -1))
        if carried is not None:
            block.addcmul_(carried.unsqueeze(1), carried_factor.unsqueeze(-1))
        if following:
            summary_after = torch.bmm(last_row, flat[:, start:stop]).squeeze(1)
            if carried is not None:
                summary_after.addcmul_(carried, carried_last.unsqueeze(-1))
            carried = summary_after
    return prefix, carried.view(g, *shape) if final else None


def _prefix_summaries_backward(
    grad_prefix: torch.Tensor, grad_final: torch.Tensor | None, chunk_max: torch.Tensor, before: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of :func:`_prefix_summaries` with respect to the chunk summaries and the initial
    summary, from those of the prefix summaries (g, chunks, R, m) and of the final one (g, R, m; None:
    it was not asked for): the same products transposed, blocks in reverse."""
    g, chunks, *shape = grad_prefix.shape
    grad_prefix = grad_prefix.reshape(g, chunks, -1)
    grad_chunks = grad_prefix.new_empty(grad_prefix.shape)
    grad_carried = None if grad_final is None else grad_final.reshape(g, 1, -1)
    for start in reversed(range(0, chunks, _PREFIX_BLOCK)):
        stop = min(chunks, start + _PREFIX_BLOCK)
        following = grad_carried is not None
        decay, last_row, carried_factor, carried_last = _block_decay(
            chunk_max, before, start, stop, carried=True, following=following
        )
        grad_block = grad_prefix[:, start:stop]
        chunk_grad = torch.bmm(decay.transpose(-1, -2), grad_block, out=grad_chunks[:, start:stop])
        carried = torch.bmm(carried_factor.unsqueeze(1), grad_block)
        if following:
            chunk_grad.baddbmm_(last_row.transpose(-1, -2), grad_carried)
            carried.addcmul_(grad_carried, carried_last[:, None, None])
        grad_carried = carried
    return grad_chunks.view(g, chunks, *shape), grad_carried.view(g, *shape)


def tiled_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor, *,
    eps: float, causal: bool, chunk_size: int, key_padding_mask: torch.Tensor | None = None,
    state: CausalLinearState | None = None, keep_state: bool = False,
) -> tuple[torch.Tensor, CausalLinearState | None]:
    """FAVOR+ attention of raw ``q``, ``k``, ``v`` (..., n, d) with ``projection`` (m, d), tile by tile:
    the outputs (..., n_q, d) and, if ``keep_state``, the causal state after the last position (else
    None). Under autograd (an input needs a gradient; the projection gets none) through the tiles' own
    backward; otherwise the forward alone, which can continue after the keys in ``state``."""
    options = {"eps": eps, "causal": causal, "chunk_size": chunk_size, "key_padding_mask": key_padding_mask}
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        if state is not None or keep_state:
            raise ValueError("a causal state is continued or kept only without autograd")
        return _attention_with_backward(q, k, v, projection, **options), None
    return _attention_inference(q, k, v, projection, **options, state=state, keep_state=keep_state)
