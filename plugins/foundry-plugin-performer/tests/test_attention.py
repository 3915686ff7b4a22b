"""FAVOR+ maths: the estimator, the projection, chunked causal attention, causality, padding, decoding."""

from __future__ import annotations

import math

import pytest
import torch
from foundry_plugin_performer import tiles
from foundry_plugin_performer.attention import FavorAttention, orthogonal_gaussian_projection
from foundry_plugin_performer.reference import (
    CausalLinearState,
    causal_linear_attention,
    causal_linear_attention_step,
    favor_features,
    linear_attention,
)

F64 = torch.float64


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def softmax_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -math.inf)
    return scores.softmax(dim=-1) @ v


def masked_reference(q, k, v, log_scale, causal: bool) -> torch.Tensor:
    """Linear attention written out as an explicit (n x n) weighted average."""
    weights = (q @ k.transpose(-1, -2)) * log_scale.exp().unsqueeze(-2)
    if causal:
        weights = weights.tril()
    return (weights @ v) / weights.sum(dim=-1, keepdim=True)


def random_features(*shape: int, seed: int = 0, dtype=F64, requires_grad=False):
    """Positive features (batch, heads, n, m), values (.., n, d) and key log-scales spanning e^-6..e^6."""
    batch, heads, n, m, d = shape
    g = generator(seed)
    q = torch.rand(batch, heads, n, m, generator=g, dtype=dtype) + 0.01
    k = torch.rand(batch, heads, n, m, generator=g, dtype=dtype) + 0.01
    v = torch.randn(batch, heads, n, d, generator=g, dtype=dtype)
    log_scale = 2 * torch.randn(batch, heads, n, generator=g, dtype=dtype)
    return tuple(t.requires_grad_(requires_grad) for t in (q, k, v, log_scale))


# --- the estimator and the projection ------------------------------------------------------------


def test_projection_blocks_are_orthogonal_with_chi_norms():
    dim, nb_features = 16, 3 * 16 + 5
    projection = orthogonal_gaussian_projection(nb_features, dim, generator=generator(), dtype=F64)
    assert projection.shape == (nb_features, dim)
    directions = projection / projection.norm(dim=-1, keepdim=True)
    for start in range(0, nb_features, dim):
        block = directions[start : start + dim]
        torch.testing.assert_close(block @ block.T, torch.eye(len(block), dtype=F64), atol=1e-10, rtol=0)
    # Rows are rescaled by independent chi(dim) norms, not all sqrt(dim), and not orthogonal across blocks.
    norms = projection.norm(dim=-1)
    assert norms.std() > 0.1 and abs(norms.mean().item() - math.sqrt(dim)) < 1.0
    assert (directions[:dim] @ directions[dim : 2 * dim].T).abs().max() > 0.1


def test_projection_is_reproducible_and_builds_on_meta():
    first = orthogonal_gaussian_projection(40, 8, generator=generator(3))
    assert torch.equal(first, orthogonal_gaussian_projection(40, 8, generator=generator(3)))
    assert not torch.equal(first, orthogonal_gaussian_projection(40, 8, generator=generator(4)))
    with torch.device("meta"):
        assert FavorAttention(64).projection.is_meta
    with pytest.raises(ValueError):
        orthogonal_gaussian_projection(0, 8)


def test_kernel_estimate_is_unbiased():
    """Without eps, the mean of phi(q).phi(k) over independent draws is exp(q.k / sqrt(d)) within 3 sigma."""
    dim, draws = 16, 4000
    g = generator(1)
    pairs = torch.randn(4, 2, dim, generator=g, dtype=F64) * 0.5
    # Each block of `dim` orthogonal rows is one independent draw of a `dim`-feature estimator.
    projection = orthogonal_gaussian_projection(dim * draws, dim, generator=g, dtype=F64)
    for q, k in pairs:
        fq, fk = favor_features(q, projection, eps=0.0), favor_features(k, projection, eps=0.0)
        per_feature = fq.features * fk.features * torch.exp(fq.log_scale + fk.log_scale) * projection.shape[0]
        estimates = per_feature.view(draws, dim).mean(dim=-1)
        exact = torch.exp(q @ k / math.sqrt(dim))
        sigma = estimates.std() / math.sqrt(draws)
        assert abs(estimates.mean() - exact) < 3 * sigma, (estimates.mean().item(), exact.item(), sigma.item())


def test_feature_map_gradients_equal_autograd_of_the_formula():
    """The reference feature map, values and gradients, against the formula written out."""
    g = generator(13)
    x = torch.randn(2, 5, 4, generator=g, dtype=F64, requires_grad=True)
    projection = torch.randn(6, 4, generator=g, dtype=F64, requires_grad=True)
    upstream = torch.randn(2, 5, 6, generator=g, dtype=F64), torch.randn(2, 5, generator=g, dtype=F64)
    for eps in (0.0, 1e-2):
        ours = favor_features(x, projection, eps=eps)
        logits = x @ projection.T * 4**-0.25
        shift = logits.amax(dim=-1, keepdim=True).detach()
        features = torch.exp(logits - shift) + eps
        log_scale = shift[..., 0] - x.square().sum(-1) / 4 - 0.5 * math.log(6)
        torch.testing.assert_close(ours.features, features)
        torch.testing.assert_close(ours.log_scale, log_scale)
        expected = torch.autograd.grad((features, log_scale), (x, projection), upstream)
        got = torch.autograd.grad(tuple(ours), (x, projection), upstream)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)

    def estimator(x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        """Without eps, phi = features * exp(log_scale) is smooth (the detached shift cancels)."""
        phi = favor_features(x, projection, eps=0.0)
        return phi.features * phi.log_scale.exp().unsqueeze(-1)

    assert torch.autograd.gradcheck(estimator, (x, projection))


def test_approximation_error_falls_as_features_grow():
    dim, n = 16, 32
    g = generator(2)
    q, k, v = (torch.randn(4, 2, n, dim, generator=g, dtype=F64) * 0.6 for _ in range(3))
    exact = softmax_reference(q, k, v, causal=False)
    errors = []
    for nb_features in (8, 32, 128, 512):
        trials = [FavorAttention(dim, nb_features, eps=0.0, generator=generator(seed)).double() for seed in range(4)]
        errors.append(sum((favor(q, k, v) - exact).square().mean().item() for favor in trials) / len(trials))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < errors[0] / 8, errors  # roughly 1/nb_features


# --- chunked causal attention ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 50])
def test_chunked_causal_equals_explicit_masked_reference(chunk_size):
    q, k, v, log_scale = random_features(2, 3, 50, 12, 5)
    out, _ = causal_linear_attention(q, k, v, chunk_size, k_log_scale=log_scale)
    torch.testing.assert_close(out, masked_reference(q, k, v, log_scale, causal=True), atol=1e-12, rtol=1e-10)


def test_bidirectional_equals_explicit_reference():
    q, k, v, log_scale = random_features(2, 3, 30, 12, 5)
    out = linear_attention(q, k, v, k_log_scale=log_scale)
    torch.testing.assert_close(out, masked_reference(q, k, v, log_scale, causal=False), atol=1e-12, rtol=1e-10)


def test_gradients_pass_gradcheck():
    """The reference's causal (with and after a state) and bidirectional attention."""
    inputs = random_features(1, 2, 11, 5, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v, s: causal_linear_attention(q, k, v, 4, k_log_scale=s)[0], inputs)
    assert torch.autograd.gradcheck(lambda q, k, v, s: linear_attention(q, k, v, k_log_scale=s), inputs)
    initial = torch.rand(1, 2, 4, 5, generator=generator(4), dtype=F64, requires_grad=True)
    start = torch.tensor([[0.5, -1.0]], dtype=F64)

    def continued(q, k, v, s, summary):
        """Outputs after a given state, and after the state it leaves (states alone are stabiliser-relative)."""
        state = CausalLinearState(summary, start)
        out, state = causal_linear_attention(q, k, v, 4, k_log_scale=s, state=state)
        more, _ = causal_linear_attention(q, k, v, 4, k_log_scale=s, state=state)
        return out, more

    assert torch.autograd.gradcheck(continued, (*inputs, initial))


@pytest.mark.parametrize("tile_bytes", [1, 1 << 30], ids=["one-head-tiles", "one-tile"])
@pytest.mark.parametrize("causal, prefix_block", [(True, 1), (True, 2), (True, 16), (False, 16)])
def test_whole_favor_attention_passes_gradcheck(causal, prefix_block, tile_bytes, monkeypatch):
    """Without eps the stabilisers cancel exactly, so detaching them leaves the true gradient. Causal prefix
    summaries are computed a block of chunks per product; any block size gives the same gradients."""
    monkeypatch.setattr(tiles, "_TILE_BYTES", tile_bytes)
    monkeypatch.setattr(tiles, "_PREFIX_BLOCK", prefix_block)
    favor = FavorAttention(4, 6, causal=causal, chunk_size=2, eps=0.0, generator=generator()).double()
    g = generator(5)
    inputs = tuple(torch.randn(1, 2, 7, 4, generator=g, dtype=F64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(favor, inputs)
    mask = torch.tensor([[False] * 5 + [True] * 2])
    assert torch.autograd.gradcheck(lambda q, k, v: favor(q, k, v, mask), inputs)


@pytest.mark.parametrize("tile_bytes", [1, 1 << 30], ids=["one-head-tiles", "one-tile"])
@pytest.mark.parametrize("causal, chunk_size", [(False, 64), (True, 1), (True, 4), (True, 64)])
def test_backward_equals_autograd_of_the_feature_functions(causal, chunk_size, tile_bytes, monkeypatch):
    """The module's attention has its own backward (tile by tile); with eps and padding (left and
    right, and a length that is not a multiple of the chunk) it gives the gradients autograd gives
    through favor_features and linear_attention or causal_linear_attention."""
    monkeypatch.setattr(tiles, "_TILE_BYTES", tile_bytes)
    favor = FavorAttention(8, 12, causal=causal, chunk_size=chunk_size, generator=generator(3)).double()
    g = generator(9)
    q, k, v = (2 * torch.randn(2, 10, 3, 8, generator=g, dtype=F64) for _ in range(3))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :3], mask[1, 6:] = True, True
    upstream = torch.randn(2, 3, 10, 8, generator=g, dtype=F64)
    for batch, key_padding_mask in ((slice(None), None), (slice(None), mask), (slice(1, 2), mask)):
        # As a model passes them: heads split off the width, so not contiguous (batch 1 included).
        ours = [t[batch].clone().requires_grad_() for t in (q, k, v)]
        batch_mask = None if key_padding_mask is None else key_padding_mask[batch]
        out = favor(*(t.transpose(1, 2) for t in ours), batch_mask)
        reference = [t[batch].transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v)]
        keys = favor_features(reference[1], favor.projection, eps=favor.eps)
        queries = favor_features(reference[0], favor.projection, eps=favor.eps).features
        if causal:
            expected, _ = causal_linear_attention(
                queries, keys.features, reference[2], chunk_size, k_log_scale=keys.log_scale, key_padding_mask=batch_mask
            )
        else:
            expected = linear_attention(queries, keys.features, reference[2], batch_mask, k_log_scale=keys.log_scale)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
        grads = torch.autograd.grad(out, ours, upstream[batch])
        expected_grads = torch.autograd.grad(expected, reference, upstream[batch])
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got.transpose(1, 2), want, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("causal", [True, False])
def test_a_projection_that_needs_a_gradient_gets_it_through_the_reference(causal):
    """The tiles give the projection no gradient; when it needs one, FavorAttention runs the reference:
    the same outputs, padding included, and the projection's gradient passes gradcheck."""
    favor = FavorAttention(4, 6, causal=causal, chunk_size=3, eps=0.0, generator=generator()).double()
    g = generator(23)
    q, k, v = (torch.randn(2, 2, 7, 4, generator=g, dtype=F64) for _ in range(3))
    mask = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
    tiled = favor(q, k, v, mask)
    favor.projection.requires_grad_()
    out = favor(q, k, v, mask)
    assert out.requires_grad
    torch.testing.assert_close(out, tiled, atol=1e-12, rtol=1e-10)

    def attend(projection):
        favor.projection = projection
        return favor(q, k, v, mask)

    assert torch.autograd.gradcheck(attend, (favor.projection.detach().clone().requires_grad_(),))


# --- causality, padding, decoding ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 16, 64])
def test_large_norm_future_never_changes_the_past(chunk_size):
    favor = FavorAttention(16, 32, causal=True, chunk_size=chunk_size, generator=generator())
    g = generator(6)
    q, k, v = (torch.randn(2, 2, 40, 16, generator=g) for _ in range(3))
    future = (slice(None), slice(None), slice(25, None))
    huge = [t.clone() for t in (q, k, v)]
    for t in huge:
        t[future] = 1e4 * torch.randn(t[future].shape, generator=g)
    for tracked in (False, True):  # the forward without autograd and the one autograd records
        before, after = (favor(*(t.detach().requires_grad_(tracked) for t in ts)) for ts in ((q, k, v), huge))
        assert after.requires_grad == tracked and torch.isfinite(after).all()
        assert torch.equal(before[:, :, :25], after[:, :, :25])
        assert not torch.allclose(before[:, :, 25:], after[:, :, 25:])


@pytest.mark.parametrize("chunk_size", [1, 16, 64])
def test_large_norm_future_never_changes_the_past_gradients(chunk_size):
    """The backward pass is strictly causal too: gradients of the past outputs with respect to the
    inputs are the same, bit for bit, whatever the future holds, and nothing flows to the future."""
    favor = FavorAttention(16, 32, causal=True, chunk_size=chunk_size, generator=generator())
    g = generator(6)
    q, k, v, upstream = (torch.randn(2, 2, 40, 16, generator=g) for _ in range(4))
    upstream[:, :, 25:] = 0
    huge = [t.clone() for t in (q, k, v)]
    for t in huge:
        t[:, :, 25:] = 1e4 * torch.randn(t[:, :, 25:].shape, generator=g)
    grads = []
    for inputs in ((q, k, v), huge):
        tracked = [t.clone().requires_grad_() for t in inputs]
        (favor(*tracked) * upstream).sum().backward()
        grads.append([t.grad for t in tracked])
    for calm, wild in zip(*grads, strict=True):
        assert torch.equal(calm[:, :, :25], wild[:, :, :25])
        assert (wild[:, :, 25:] == 0).all() and torch.isfinite(wild).all()


def test_huge_keys_keep_unbiased_weights():
    """A per-key stabiliser would reweight keys by their norm; the running maximum (the maximum, both ways) does not."""
    q, k, v, log_scale = random_features(1, 1, 20, 8, 4)
    log_scale = log_scale * 200  # scales from e^-1000 to e^+1000: far outside float range
    out, _ = causal_linear_attention(q, k, v, 6, k_log_scale=log_scale)
    # Where one key dominates the running maximum, a query's output is that key's value.
    winners = log_scale.cummax(dim=-1).indices[0, 0]
    torch.testing.assert_close(out[0, 0], v[0, 0, winners], atol=1e-6, rtol=0)
    # Bidirectional: every query's output is the value of the key with the largest scale.
    out = linear_attention(q, k, v, k_log_scale=log_scale * 10)  # e^-10000..e^+10000
    torch.testing.assert_close(out[0, 0], v[0, 0, log_scale[0, 0].argmax()].expand(20, -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_masked_equals_truncated(causal):
    favor = FavorAttention(16, 32, causal=causal, chunk_size=8, generator=generator())
    g = generator(7)
    q, k, v = (torch.randn(2, 2, 30, 16, generator=g) for _ in range(3))
    lengths = (30, 19)
    for t in (q, k, v):  # garbage with a huge norm where the second sequence is padded
        t[1, :, 19:] = 1e3 * torch.randn(t[1, :, 19:].shape, generator=g)
    padded = torch.arange(30)[None, :] >= torch.tensor(lengths)[:, None]
    out = favor(q, k, v, key_padding_mask=padded)
    assert torch.isfinite(out).all()
    for row, length in enumerate(lengths):
        alone = favor(*(t[row : row + 1, :, :length] for t in (q, k, v)))
        torch.testing.assert_close(out[row : row + 1, :, :length], alone, atol=1e-6, rtol=1e-5)


def test_left_padding_in_causal_mode_equals_truncated():
    favor = FavorAttention(8, 16, causal=True, chunk_size=4, generator=generator())
    g = generator(8)
    q, k, v = (torch.randn(1, 2, 12, 8, generator=g) for _ in range(3))
    padded = torch.arange(12)[None, :] < 5
    out = favor(q, k, v, key_padding_mask=padded)
    torch.testing.assert_close(out[:, :, 5:], favor(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_gradients_with_padding_are_finite_and_equal_truncated(causal):
    """Queries that see no unpadded key -- left padding in causal mode, a wholly padded row -- get zero
    outputs and zero, finite gradients, even under a large upstream gradient (dividing by a clamped
    zero denominator once overflowed into NaN); the unpadded positions' gradients are the truncated
    sequence's."""
    favor = FavorAttention(16, 24, causal=causal, chunk_size=8, generator=generator()).double()
    g = generator(22)
    q, k, v, upstream = (3 * torch.randn(2, 2, 30, 16, generator=g, dtype=F64) for _ in range(4))
    upstream *= 1e3
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, :11] = True  # in causal mode, queries 0-10 see no key
    if not causal:
        mask[1] = True  # no query sees a key
        upstream[0, :, :11] = 0  # padded queries of row 0 do attend to its keys: not in the truncated sequence
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = favor(*inputs, mask)
    (out * upstream).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs)

    alone = [t[:1, :, 11:].clone().requires_grad_() for t in (q, k, v)]
    reference = favor(*alone)
    (reference * upstream[:1, :, 11:]).sum().backward()
    torch.testing.assert_close(out[:1, :, 11:], reference.detach(), atol=1e-10, rtol=1e-8)
    for full, part in zip(inputs, alone, strict=True):
        torch.testing.assert_close(full.grad[:1, :, 11:], part.grad, atol=1e-7, rtol=1e-7)
    empty = (slice(0, 1), slice(None), slice(0, 11)) if causal else (slice(1, 2),)
    assert (out[empty] == 0).all() and all((t.grad[empty] == 0).all() for t in inputs)


def test_causal_attention_needs_as_many_queries_as_keys():
    favor = FavorAttention(8, 16, causal=True)
    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8)
    with pytest.raises(ValueError, match="4 queries and 6 keys"):
        favor(q, k, k)


def test_key_padding_mask_must_be_bool():
    favor = FavorAttention(8, 16)
    x = torch.randn(1, 1, 4, 8)
    with pytest.raises(TypeError, match="bool"):
        favor(x, x, x, key_padding_mask=torch.ones(1, 4, dtype=torch.long))


def test_step_by_step_decoding_equals_full_pass():
    favor = FavorAttention(16, 32, causal=True, chunk_size=8, generator=generator())
    g = generator(9)
    q, k, v = (torch.randn(2, 2, 21, 16, generator=g) for _ in range(3))
    full = favor(q, k, v)
    state, outs = None, []
    for t in range(21):
        out, state = favor.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=-2), full, atol=1e-6, rtol=1e-5)
    # A prompt goes in as one block; decoding continues from its state.
    prompt_out, state = favor.step(q[:, :, :13], k[:, :, :13], v[:, :, :13], None)
    rest_out, _ = favor.step(q[:, :, 13:], k[:, :, 13:], v[:, :, 13:], state)
    torch.testing.assert_close(torch.cat([prompt_out, rest_out], dim=-2), full, atol=1e-6, rtol=1e-5)


def test_prompt_blocks_and_single_steps_mix():
    """Blocks (the forward pass's tiles) and single positions (the recurrent update) hand each other
    the same state: any order of them gives the full pass, and a block's state equals the one the
    autograd path computes."""
    favor = FavorAttention(16, 32, causal=True, chunk_size=8, generator=generator()).double()
    g = generator(11)
    q, k, v = (3 * torch.randn(2, 2, 30, 16, generator=g, dtype=F64) for _ in range(3))
    full = favor(q, k, v)
    pieces = [(0, 13), (13, 14), (14, 15), (15, 26), (26, 27), (27, 30)]  # block, step, step, block, step, block
    state, outs = CausalLinearState.empty((2, 2), 32, 16, dtype=F64), []
    for start, stop in pieces:
        out, state = favor.step(q[:, :, start:stop], k[:, :, start:stop], v[:, :, start:stop], state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=-2), full)
    with torch.no_grad():
        _, block_state = favor.step(q, k, v)
    with torch.enable_grad():
        _, autograd_state = favor.step(q.requires_grad_(), k, v)
    torch.testing.assert_close(block_state.max_log_scale, autograd_state.max_log_scale.detach())
    torch.testing.assert_close(block_state.summary, autograd_state.summary.detach())


def test_functional_step_state_matches_chunked_final_state():
    q, k, v, log_scale = random_features(1, 2, 9, 6, 3)
    _, chunked = causal_linear_attention(q, k, v, 4, k_log_scale=log_scale)
    state = CausalLinearState.empty((1, 2), 6, 3, dtype=F64)
    for t in range(9):
        position = (q[..., t, :], k[..., t, :], v[..., t, :])
        _, state = causal_linear_attention_step(*position, state, k_log_scale_t=log_scale[..., t])
    torch.testing.assert_close(state.max_log_scale, chunked.max_log_scale)
    torch.testing.assert_close(state.summary, chunked.summary)


def test_a_state_is_never_modified_and_can_be_continued_twice():
    """Two continuations of one state (branches, as in beam search) each equal their own full pass,
    and stepping leaves the state it was given as it was; a step passes gradcheck."""
    favor = FavorAttention(16, 32, causal=True, chunk_size=8, generator=generator()).double()
    g = generator(12)
    q, k, v = (torch.randn(2, 2, 12, 16, generator=g, dtype=F64) for _ in range(3))
    other = tuple(torch.randn(2, 2, 1, 16, generator=g, dtype=F64) for _ in range(3))
    _, state = favor.step(q[:, :, :11], k[:, :, :11], v[:, :, :11])
    kept = CausalLinearState(state.summary.clone(), state.max_log_scale.clone())
    first, _ = favor.step(q[:, :, 11:], k[:, :, 11:], v[:, :, 11:], state)
    second, _ = favor.step(*other, state)
    torch.testing.assert_close(state.summary, kept.summary, rtol=0, atol=0)
    torch.testing.assert_close(state.max_log_scale, kept.max_log_scale, rtol=0, atol=0)
    torch.testing.assert_close(first, favor(q, k, v)[:, :, 11:])
    branch = (torch.cat([q[:, :, :11], other[0]], dim=-2), torch.cat([k[:, :, :11], other[1]], dim=-2),
              torch.cat([v[:, :, :11], other[2]], dim=-2))
    torch.testing.assert_close(second, favor(*branch)[:, :, 11:])

    # Two steps from a given state: the outputs (not the state, whose running maximum is detached).
    q, k, v, log_scale = random_features(1, 2, 2, 6, 3, requires_grad=True)
    summary = torch.rand(1, 2, 4, 6, dtype=F64, requires_grad=True)

    def steps(q, k, v, log_scale, summary):
        state, outs = CausalLinearState(summary, torch.zeros(1, 2, dtype=F64)), []
        for t in range(2):
            out, state = causal_linear_attention_step(q[..., t, :], k[..., t, :], v[..., t, :], state,
                                                      k_log_scale_t=log_scale[..., t])
            outs.append(out)
        return tuple(outs)

    assert torch.autograd.gradcheck(steps, (q, k, v, log_scale, summary))


# --- robustness and state -----------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
def test_large_norm_inputs_stay_finite_forward_and_backward(causal):
    favor = FavorAttention(16, 32, causal=causal, chunk_size=8, generator=generator())
    g = generator(10)
    q, k, v = ((1e3 * torch.randn(2, 2, 24, 16, generator=g)).requires_grad_() for _ in range(3))
    out = favor(q, k, v)
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize("causal", [True, False])
def test_bf16_autocast_matches_float32(causal):
    favor = FavorAttention(32, 64, causal=causal, chunk_size=16, generator=generator())
    g = generator(11)
    q, k, v = ((3 * torch.randn(2, 2, 40, 32, generator=g)).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = favor(q, k, v)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    # Only the output's rounding to bf16 differs from float32 maths on the same inputs.
    torch.testing.assert_close(low.float(), favor(q.float(), k.float(), v.float()), atol=0.02, rtol=0.01)


def test_projection_is_one_state_dict_entry_and_redraws_in_place():
    favor = FavorAttention(8, 20)
    assert list(favor.state_dict()) == ["projection"]
    buffer, before = favor.projection, favor.projection.clone()
    favor.redraw_projection(generator(12))
    assert favor.projection is buffer and not torch.equal(before, favor.projection)
    copy = FavorAttention(8, 20)
    copy.load_state_dict(favor.state_dict())
    x = torch.randn(1, 2, 5, 8)
    assert torch.equal(copy(x, x, x), favor(x, x, x))
    assert FavorAttention(64).nb_features == int(64 * math.log(64))


@pytest.mark.parametrize("tile_bytes", [1, 3 * 40 * 24 * 8, 1 << 30], ids=["one-head-tiles", "three-head-tiles", "one-tile"])
@pytest.mark.parametrize("causal, chunk_size", [(True, 1), (True, 7), (True, 64), (False, 64)])
def test_forward_without_autograd_equals_the_autograd_path(causal, chunk_size, tile_bytes, monkeypatch):
    """With nothing needing a gradient, FavorAttention takes a dedicated path, (batch, head) pairs a
    tile at a time; same outputs, padding included, whatever the tiles."""
    monkeypatch.setattr(tiles, "_TILE_BYTES", tile_bytes)
    favor = FavorAttention(16, 24, causal=causal, chunk_size=chunk_size, generator=generator()).double()
    g = generator(8)
    # As a model passes them: heads split off the width, so not contiguous.
    q, k, v = (3 * torch.randn(2, 40, 3, 16, generator=g, dtype=F64).transpose(1, 2) for _ in range(3))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, :13], mask[1, -5:] = True, True
    one = slice(0, 1)  # batch 1: (batch, heads) pairs flatten to a strided view
    for *qkv, key_padding_mask in ((q, k, v, None), (q, k, v, mask), (q[one], k[one], v[one], mask[one])):
        with torch.no_grad():
            fast = favor(*qkv, key_padding_mask)
        tracked = favor(qkv[0].clone().requires_grad_(), *qkv[1:], key_padding_mask)
        assert tracked.requires_grad and not fast.requires_grad
        torch.testing.assert_close(fast, tracked.detach(), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("tile_bytes", [1, 1 << 30], ids=["one-head-tiles", "one-tile"])
@pytest.mark.parametrize("n_q, n_k", [(10, 30), (30, 10)])
def test_cross_attention_without_autograd_equals_the_feature_functions(n_q, n_k, tile_bytes, monkeypatch):
    """Queries and keys of different lengths, as in an encoder-decoder's cross-attention, padding included."""
    monkeypatch.setattr(tiles, "_TILE_BYTES", tile_bytes)
    favor = FavorAttention(16, 24, generator=generator()).double()
    g = generator(21)
    q = torch.randn(2, 3, n_q, 16, generator=g, dtype=F64)
    k, v = (torch.randn(2, 3, n_k, 16, generator=g, dtype=F64) for _ in range(2))
    mask = torch.zeros(2, n_k, dtype=torch.bool)
    mask[1, -4:] = True
    with torch.no_grad():
        fast = favor(q, k, v, mask)
    key = favor_features(k, favor.projection, eps=favor.eps)
    query = favor_features(q, favor.projection, eps=favor.eps)
    reference = linear_attention(query.features, key.features, v, mask, k_log_scale=key.log_scale)
    torch.testing.assert_close(fast, reference, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
def test_outputs_without_autograd_survive_later_calls(causal, monkeypatch):
    """The forward without autograd keeps scratch buffers for the thread's next call; no output lives in them."""
    monkeypatch.setattr(tiles, "_TILE_BYTES", 1)
    favor = FavorAttention(8, 16, causal=causal, chunk_size=4, generator=generator())
    g = generator(13)
    first, second = ([torch.randn(2, 3, 12, 8, generator=g) for _ in range(3)] for _ in range(2))
    with torch.no_grad():
        out = favor(*first)
        kept = out.clone()
        favor(*second)
        assert torch.equal(out, kept)
        torch.testing.assert_close(favor(*first), kept, atol=0, rtol=0)
