"""WaveNet: causality, the receptive field of its dilations, a normalised mu-law density, cached generation."""

from __future__ import annotations

import math

import pytest
import torch

from model_foundry.errors import FoundryError


def input_gradients(model, length: int, t: int) -> torch.Tensor:
    """|d logits_t / d input_s| summed over channels, for every s: the inputs are the embedded codes."""
    model = model.double()
    codes = torch.randint(model.mu_law.levels, (1, length))
    embedded = []
    handle = model.embedding.register_forward_hook(lambda _m, _i, out: embedded.append(out.requires_grad_()) or out)
    try:
        logits = model.logits(codes)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[0, t].sum(), embedded[0])
    # Input position s holds code s - 1 (the start embedding at s = 0): shift back to codes.
    return grad[0].abs().sum(-1)


@pytest.mark.parametrize("dilations, kernel_size", [([1, 2, 4], 2), ([1, 3, 9, 2], 3)])
def test_each_output_sees_exactly_its_receptive_field_of_past_samples(build, dilations, kernel_size):
    model = build("wavenet", dilations=dilations, kernel_size=kernel_size)
    field = (kernel_size - 1) * sum(dilations) + 1
    assert model.receptive_field == field
    length = field + 12
    for t in (0, 5, field - 1, field, length - 1):
        grad = input_gradients(model, length, t)
        # logits_t depend on input positions t - field + 1 .. t, i.e. on codes t - field .. t - 1
        seen = set(grad.nonzero().flatten().tolist())
        assert seen == set(range(max(0, t - field + 1), t + 1)), f"t={t}: sees inputs {sorted(seen)}"


def test_changing_a_sample_never_changes_the_predictions_of_earlier_ones(build):
    model = build("wavenet").double().eval()
    clip = torch.rand(1, 40, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        base = model.logits(model.mu_law.codes(clip))
        for t in range(40):
            changed = clip.clone()
            changed[0, t] = -changed[0, t] if changed[0, t].abs() > 0.1 else 0.9
            logits = model.logits(model.mu_law.codes(changed))
            assert torch.equal(logits[:, : t + 1], base[:, : t + 1])
            if t + 1 < 40:
                assert not torch.equal(logits[:, t + 1], base[:, t + 1])


def test_the_probabilities_of_every_clip_sum_to_one(build, every_example):
    model = build("wavenet", mu_law_levels=4, num_classes=2).double().eval()
    clips = every_example(4, (3,), model.mu_law.values).double()
    with torch.no_grad():
        total = model.log_pmf(input_values=clips, class_labels=torch.ones(len(clips), dtype=torch.long)).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=total.dtype))


def test_the_mu_law_density_integrates_to_one(build):
    model = build("wavenet", mu_law_levels=16).double().eval()
    grid = torch.linspace(-1, 1, 8_001, dtype=torch.float64)[1:-1]
    with torch.no_grad():
        density = model.log_prob(input_values=grid[:, None]).exp()
    assert float(density.sum() * (grid[1] - grid[0])) == pytest.approx(1.0, abs=5e-3)


def test_mu_law_codes_and_values():
    from foundry_plugin_autoregressive.discrete import MuLaw

    mu_law = MuLaw(256)
    codes = torch.arange(256)
    assert torch.equal(mu_law.codes(mu_law.values(codes)), codes)
    assert mu_law.values(torch.tensor([0, 255])).tolist() == [-1.0, 1.0]
    x = torch.linspace(-1, 1, 1001)
    assert bool((mu_law.values(mu_law.codes(x)) - x).abs().max() < 0.025)  # half the widest bin
    # Narrow bins near silence, wide ones at full scale: the mu-law's point.
    widths = mu_law.log_width(torch.tensor([128, 254])).exp()
    assert widths[0] < widths[1] / 50
    torch.testing.assert_close(mu_law.log_width(codes).exp().sum(), torch.tensor(2.0, dtype=torch.float64))


@pytest.mark.parametrize("num_classes", [None, 2])
def test_cached_generation_draws_exactly_the_samples_of_full_recomputation(build, num_classes):
    model = build("wavenet", dilations=[1, 2, 4, 8], kernel_size=2, num_classes=num_classes).double()
    conditions = torch.tensor([0, 1, 1]) if num_classes else None

    def draw(cached: bool) -> torch.Tensor:
        return model.sample(3, generator=torch.Generator().manual_seed(7), conditions=conditions, length=48, cached=cached)

    cached = draw(True)
    assert cached.shape == (3, 48) and cached.dtype == torch.float32
    assert torch.equal(cached, draw(False))
    assert len(set(model.mu_law.codes(cached).flatten().tolist())) > 3  # not a constant clip


def test_the_cache_computes_the_logits_of_the_full_pass(build):
    from foundry_plugin_autoregressive.wavenet import _Cache

    model = build("wavenet", dilations=[1, 2, 4, 8], num_classes=2).double().eval()
    codes, classes = torch.randint(16, (2, 30)), torch.tensor([1, 0])
    with torch.no_grad():
        full = model.logits(codes, classes)
        cache = _Cache(model, 2, classes, torch.device("cpu"))
        steps = [cache.step(codes[:, t - 1] if t else None) for t in range(30)]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-12, atol=1e-12)


def test_a_conditional_wavenet_and_bad_batches(build):
    model = build("wavenet", num_classes=2).eval()
    clip = torch.sin(torch.arange(64) / 3.0)[None].repeat(2, 1) * 0.5
    with torch.no_grad():
        tone, chirp = (model.log_prob(input_values=clip, class_labels=torch.full((2,), c)) for c in (0, 1))
    assert not torch.equal(tone, chirp)
    with pytest.raises(FoundryError, match="needs class_labels"):
        model.log_prob(input_values=clip)
    with pytest.raises(FoundryError, match=r"mono clips.*\[2, 1, 64\]"):
        model.log_prob(input_values=clip[:, None], class_labels=torch.zeros(2, dtype=torch.long))
    assert math.isfinite(float(model(input_values=clip, class_labels=torch.tensor([0, 1])).loss.detach()))
