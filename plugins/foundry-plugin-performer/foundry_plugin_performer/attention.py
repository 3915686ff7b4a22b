"""FAVOR+ attention (Choromanski et al., 2021): the random projection and :class:`FavorAttention`.

The module the Performer layers hold computes attention through the tuned tiles of
:mod:`foundry_plugin_performer.tiles`; the same maths written plainly, which the tests compare
the tiles against, is :mod:`foundry_plugin_performer.reference`.

How the maths works -- the feature map, the stabiliser that keeps it exact and strictly causal,
the chunked causal pass and the recurrent state -- is explained in ``docs/plugins/performer.md``
(section *How FAVOR+ is computed*).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from foundry_plugin_performer.reference import (
    CausalLinearState,
    causal_linear_attention,
    causal_linear_attention_step,
    favor_features,
    linear_attention,
)
from foundry_plugin_performer.tiles import tiled_attention

__all__ = ["FavorAttention", "default_nb_features", "orthogonal_gaussian_projection"]


def default_nb_features(dim_head: int) -> int:
    """The FAVOR+ paper's default number of random features, ``d log d``."""
    return max(1, int(dim_head * math.log(dim_head)))


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

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend; ``key_padding_mask`` (batch, n_k) is True on padded keys."""
        if self.causal and q.shape[-2] != k.shape[-2]:
            raise ValueError(
                f"causal attention needs as many queries as keys (position i attends to keys 0..i), "
                f"got {q.shape[-2]} queries and {k.shape[-2]} keys"
            )
        if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
            raise TypeError("key_padding_mask must be a bool tensor, True on padded keys")
        with torch.autocast(q.device.type, enabled=False):
            inputs = self._in_float(q, k, v)
            if torch.is_grad_enabled() and self.projection.requires_grad:  # the tiles give the projection no gradient
                out = self._reference(*inputs, key_padding_mask)
            else:
                out, _ = tiled_attention(
                    *inputs, eps=self.eps, causal=self.causal, chunk_size=self.chunk_size,
                    key_padding_mask=key_padding_mask,
                )
        return out.to(v.dtype)

    def step(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: CausalLinearState | None = None
    ) -> tuple[torch.Tensor, CausalLinearState]:
        """Continue causal attention over new positions (batch, heads, t, dim_head) after ``state``.

        ``state=None`` starts a sequence. One position (t = 1) costs the same time and memory
        however long the sequence already is; a longer block (a prompt) goes chunkwise, through
        the same tiles as :meth:`forward` when nothing needs a gradient. The state given is left
        as it was. The outputs equal those of :meth:`forward` over the whole sequence.
        """
        t = q.shape[-2]
        tensors = (q, k, v, self.projection) + (() if state is None else (state.summary, state.max_log_scale))
        tracked = torch.is_grad_enabled() and any(x.requires_grad for x in tensors)
        with torch.autocast(q.device.type, enabled=False):
            q, k, values, projection = self._in_float(q, k, v)
            if t > 1 and not tracked:
                out, state = tiled_attention(
                    q, k, values, projection, eps=self.eps, causal=True, chunk_size=self.chunk_size,
                    state=state, keep_state=True,
                )
                return out.to(v.dtype), state
            both = favor_features(torch.cat([q, k], dim=-2), projection, eps=self.eps)  # one map for both
            query, key, log_scale = both.features[..., :t, :], both.features[..., t:, :], both.log_scale[..., t:]
            if state is None:
                state = CausalLinearState.empty(k.shape[:-2], self.nb_features, v.shape[-1], dtype=q.dtype, device=v.device)
            if t == 1:
                out, state = causal_linear_attention_step(
                    query[..., 0, :], key[..., 0, :], values[..., 0, :], state, k_log_scale_t=log_scale[..., 0]
                )
                return out.unsqueeze(-2).to(v.dtype), state
            out, state = causal_linear_attention(query, key, values, self.chunk_size, k_log_scale=log_scale, state=state)
        return out.to(v.dtype), state

    def _in_float(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``q``, ``k``, ``v`` and the projection in float32 (float64 stays float64): lower precision
        exponentials would lose the stabiliser's precision."""
        dtype = torch.promote_types(k.dtype, torch.float32)
        return q.to(dtype), k.to(dtype), v.to(dtype), self.projection.to(dtype)

    def _reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, projection: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention through :mod:`foundry_plugin_performer.reference`, where autograd reaches the projection."""
        query, key = (favor_features(x, projection, eps=self.eps) for x in (q, k))
        if self.causal:
            out, _ = causal_linear_attention(
                query.features, key.features, v, self.chunk_size, k_log_scale=key.log_scale,
                key_padding_mask=key_padding_mask,
            )
            return out
        return linear_attention(query.features, key.features, v, key_padding_mask, k_log_scale=key.log_scale)
