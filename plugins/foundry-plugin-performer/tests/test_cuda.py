"""The Performer on a CUDA device: the same results as on the CPU, decoding, bf16 autocast, a model's
training step, generation, redraws and save/load. Skipped where no CUDA device is present (CI has none)."""

from __future__ import annotations

import pytest
import torch
from foundry_plugin_performer.attention import FavorAttention

from model_foundry import create_model, load, save
from model_foundry.config import load_model_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
VOCAB = 50


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = generator(seed)
    return [3 * torch.randn(*shape, generator=g, dtype=dtype) for _ in range(3)]


def padding(batch: int, n: int) -> torch.Tensor:
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask[0, :9], mask[-1, -7:] = True, True
    return mask


@pytest.fixture(autouse=True)
def exact_float32_products():
    """TF32 would round float32 products to 10 bits on the GPU; these tests compare with the CPU."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_attention_equals_cpu_forward_and_backward(causal):
    favor = FavorAttention(16, 40, causal=causal, chunk_size=8, generator=generator()).double()
    on_gpu = FavorAttention(16, 40, causal=causal, chunk_size=8).double().to(CUDA)
    on_gpu.load_state_dict(favor.state_dict())
    q, k, v = inputs(2, 3, 37, 16, seed=1)
    mask = padding(2, 37)
    for key_padding_mask in (None, mask):
        with torch.no_grad():  # the tiled forward
            torch.testing.assert_close(
                on_gpu(q.to(CUDA), k.to(CUDA), v.to(CUDA), None if key_padding_mask is None else key_padding_mask.to(CUDA)).cpu(),
                favor(q, k, v, key_padding_mask), atol=1e-10, rtol=1e-8,
            )
        cpu_inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        gpu_inputs = [t.to(CUDA).requires_grad_() for t in (q, k, v)]
        expected = favor(*cpu_inputs, key_padding_mask)
        got = on_gpu(*gpu_inputs, None if key_padding_mask is None else key_padding_mask.to(CUDA))
        torch.testing.assert_close(got.cpu(), expected, atol=1e-10, rtol=1e-8)
        weights = torch.randn(expected.shape, generator=generator(2), dtype=expected.dtype)
        (expected * weights).sum().backward()
        (got * weights.to(CUDA)).sum().backward()
        for cpu_input, gpu_input in zip(cpu_inputs, gpu_inputs, strict=True):
            torch.testing.assert_close(gpu_input.grad.cpu(), cpu_input.grad, atol=1e-9, rtol=1e-7)


def test_float32_attention_equals_cpu():
    for causal in (True, False):
        favor = FavorAttention(64, 256, causal=causal, generator=generator())
        on_gpu = FavorAttention(64, 256, causal=causal).to(CUDA)
        on_gpu.load_state_dict(favor.state_dict())
        q, k, v = inputs(2, 8, 300, 64, seed=3, dtype=torch.float32)
        with torch.no_grad():
            torch.testing.assert_close(on_gpu(q.to(CUDA), k.to(CUDA), v.to(CUDA)).cpu(), favor(q, k, v), atol=2e-5, rtol=1e-4)


def test_decoding_equals_the_full_pass():
    favor = FavorAttention(16, 32, causal=True, chunk_size=8, generator=generator()).to(CUDA)
    q, k, v = (t.to(CUDA) for t in inputs(2, 2, 21, 16, seed=4, dtype=torch.float32))
    with torch.no_grad():
        full = favor(q, k, v)
        state, outs = None, []
        for t in range(21):
            out, state = favor.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
            outs.append(out)
    assert state.summary.device.type == "cuda"
    torch.testing.assert_close(torch.cat(outs, dim=-2), full, atol=1e-5, rtol=1e-5)


def test_large_norm_future_never_changes_the_past():
    favor = FavorAttention(16, 32, causal=True, chunk_size=16, generator=generator()).to(CUDA)
    q, k, v = (t.to(CUDA) for t in inputs(2, 2, 40, 16, seed=5, dtype=torch.float32))
    huge = [t.clone() for t in (q, k, v)]
    for t in huge:
        t[:, :, 25:] = 1e4 * torch.randn_like(t[:, :, 25:])
    for tracked in (False, True):
        before, after = (favor(*(t.detach().requires_grad_(tracked) for t in ts)) for ts in ((q, k, v), huge))
        assert torch.isfinite(after).all()
        assert torch.equal(before[:, :, :25], after[:, :, :25])


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_bf16_autocast_matches_float32(causal):
    favor = FavorAttention(32, 64, causal=causal, chunk_size=16, generator=generator()).to(CUDA)
    q, k, v = (t.to(CUDA) for t in inputs(2, 2, 40, 32, seed=6, dtype=torch.float32))
    low_inputs = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = favor(*low_inputs)
    assert torch.isfinite(low).all()
    low.float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in low_inputs)
    with torch.no_grad():
        exact = favor(*(t.detach().float() for t in low_inputs))
    torch.testing.assert_close(low.detach().float(), exact, atol=0.03, rtol=0.02)


def decoder(**block):
    config = load_model_config(
        {"architecture": "performer", "preset": "tiny", "vocab_size": VOCAB, "decoder": {"device": "cuda", **block}}
    )
    torch.manual_seed(0)
    return create_model(config)


def test_token_decoder_trains_generates_and_saves_on_cuda(tmp_path):
    model = decoder(feature_redraw_interval=2, auto_check_redraw=False).train()
    assert {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()} == {"cuda"}
    ids = torch.randint(0, VOCAB, (2, 33), device=CUDA)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first_projection = next(m for m in model.modules() if isinstance(m, FavorAttention)).projection.clone()
    losses = []
    for step in range(1, 5):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.on_optimizer_step(step)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    projection = next(m for m in model.modules() if isinstance(m, FavorAttention)).projection
    assert projection.device.type == "cuda" and not torch.equal(projection, first_projection)

    model.eval()
    prompt = ids[:, :7]
    generated = model.generate(prompt, max_new_tokens=12)
    assert generated.device.type == "cuda"
    with torch.no_grad():
        logits = model(generated).logits
    assert torch.equal(logits[:, 6:-1].argmax(-1), generated[:, 7:])

    loaded = load(save(model, tmp_path / "lm"), device=CUDA).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(generated).logits, logits)
