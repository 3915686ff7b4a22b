"""The energy-based models: Langevin dynamics, energy and score, the replay buffer, the loss, sampling."""

from __future__ import annotations

import math

import pytest
import torch
from foundry_plugin_ebm.model import langevin

from model_foundry import FoundryError, create_model


def build(architecture="ebm", modality=None, **fields):
    return create_model({"architecture": architecture, "preset": "tiny", **fields}, modality=modality)


# --- Langevin dynamics on a quadratic energy ---------------------------------------------------------

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COVARIANCE = torch.tensor([[1.0, 0.5], [0.5, 0.75]], dtype=torch.float64)
PRECISION = torch.linalg.inv(COVARIANCE)


def quadratic_energy(x):
    """E(x) = (x - m)^T P (x - m) / 2: exp(-E) is the Gaussian N(m, P^-1)."""
    centred = x - MEAN
    return 0.5 * ((centred @ PRECISION) * centred).sum(-1)


def chains(step_size, noise_scale=None, count=10_000, steps=300):
    start = torch.zeros(count, 2, dtype=torch.float64)
    return langevin(quadratic_energy, start, n_steps=steps, step_size=step_size, noise_scale=noise_scale,
                    generator=torch.Generator().manual_seed(0))


def test_langevin_on_a_quadratic_energy_reaches_the_gaussian_it_defines():
    samples = chains(step_size=0.02)
    torch.testing.assert_close(samples.mean(0), MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(samples.T.cov(), COVARIANCE, atol=0.04, rtol=0)


def test_langevin_stationary_covariance_matches_its_closed_form_with_the_discretisation_bias():
    """x' = x - s P (x - m) + b N(0, I) has the stationary covariance b^2 (2 s P - s^2 P^2)^-1 (P symmetric):
    (P - s P^2 / 2)^-1 for the exact noise b^2 = 2 s, T times that for b^2 = 2 s T."""
    step = 0.25
    exact = torch.linalg.inv(PRECISION - step * PRECISION @ PRECISION / 2)
    assert (exact - COVARIANCE).abs().max() > 0.1  # the bias this step size makes is measurable
    samples = chains(step_size=step, steps=100)
    torch.testing.assert_close(samples.mean(0), MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(samples.T.cov(), exact, atol=0.04, rtol=0.03)
    cold = chains(step_size=step, noise_scale=math.sqrt(2 * step * 0.25), steps=100)
    torch.testing.assert_close(cold.T.cov(), 0.25 * exact, atol=0.01, rtol=0.03)


def test_langevin_clips_gradients_and_keeps_bounds():
    start = torch.full((500, 2), 0.9, dtype=torch.float64)
    steep = lambda x: 1000 * x.sum(-1)  # noqa: E731 - gradient 1000 everywhere
    moved = langevin(steep, start, n_steps=1, step_size=0.1, noise_scale=0.0, clip_value=1.0)
    torch.testing.assert_close(moved, start - 0.1)
    bounded = langevin(steep, start, n_steps=3, step_size=0.1, noise_scale=1.0, bounds=(-1.0, 1.0),
                       generator=torch.Generator().manual_seed(0))
    assert bounded.min() == -1.0 and bounded.max() <= 1.0


# --- energy and score --------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["ebm", "deep_ebm"])
def test_score_is_minus_the_gradient_of_the_energy(architecture):
    torch.manual_seed(0)
    model = build(architecture).double().eval()
    x = torch.randn(5, 2, dtype=torch.float64)
    score = model.score(x)
    epsilon = 1e-6
    for dimension in range(2):
        step = torch.zeros_like(x)
        step[:, dimension] = epsilon
        central = (model.energy(x + step) - model.energy(x - step)) / (2 * epsilon)
        torch.testing.assert_close(score[:, dimension], -central, atol=1e-7, rtol=1e-6)
    # one energy per example, independent of the rest of the batch
    torch.testing.assert_close(model.energy(x)[:2], model.energy(x[:2]))


def test_deep_ebm_weights_are_spectrally_normalized():
    torch.manual_seed(0)
    model = build("deep_ebm", energy_network={"hidden_dims": [16, 16], "blocks_per_stage": 2})
    for _ in range(30):  # each training-mode forward runs one power iteration
        model.network(torch.randn(8, 2))
    model.eval()
    layers = [m for m in model.network.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert len(layers) == 1 + 2 * 2 * 2 + 1 + 1  # stem, two stages of two blocks of two layers, a projection, the head
    for layer in layers:
        largest = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert largest == pytest.approx(1.0, abs=0.02)
    plain = build("deep_ebm", energy_network={"hidden_dims": [16, 16], "spectral_norm": False})
    assert not any(hasattr(m, "parametrizations") for m in plain.network.modules())


def test_a_chain_computes_each_spectrally_normalized_weight_once_and_samples_the_same(monkeypatch):
    """The weights are fixed along an SGLD chain: W / sigma is computed once per chain, not at every step."""
    import contextlib

    from torch.nn.utils import parametrize

    model = build("deep_ebm", energy_network={"hidden_dims": [16], "blocks_per_stage": 1}, mcmc={"n_steps": 7})
    normalized = [m.parametrizations.weight[0] for m in model.network.modules() if hasattr(m, "parametrizations")]
    spectral, computed = type(normalized[0]), []
    forward = spectral.forward
    monkeypatch.setattr(spectral, "forward", lambda self, weight: computed.append(self) or forward(self, weight))
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert len(computed) == len(normalized)
    computed.clear()
    monkeypatch.setattr(parametrize, "cached", contextlib.nullcontext)  # every step computes them again
    assert torch.equal(model.sample(5, generator=torch.Generator().manual_seed(0)), samples)
    assert len(computed) == 7 * len(normalized)


def test_deep_ebm_on_images_is_convolutional_unless_kind_mlp():
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    for kind in (None, "mlp"):
        model = build("deep_ebm", "image", input_shape=[1, 8, 8], energy_network={"hidden_dims": [4, 8], "kind": kind})
        convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model.network.modules())
        assert convolutional == (kind is None)
        assert model.energy(images).shape == (3,)


# --- the replay buffer and the loss -------------------------------------------------------------------


def frozen_chains(**buffer):
    """A model whose SGLD leaves chains where they are (no step, no noise): what the buffer does is visible."""
    return build(mcmc={"n_steps": 1, "step_size": 1e-30, "noise_scale": 0.0}, sample_buffer=buffer)


def test_persistent_chains_are_written_back_and_restarted_at_reinit_rate():
    data = torch.randn(8, 2)
    model = frozen_chains(capacity=32, reinit_prob=0.0)
    before = model.replay_buffer.clone()
    model.train()(vectors=data)
    assert torch.equal(model.replay_buffer, before)  # chains resumed where they were, none restarted

    model = frozen_chains(capacity=32, reinit_prob=1.0, init_range=3.0)
    before = model.replay_buffer.clone()
    model.train()(vectors=data)
    changed = (model.replay_buffer != before).any(-1)
    assert int(changed.sum()) == 8  # one distinct chain per example, each restarted
    assert model.replay_buffer.abs().max() <= 3.0 and model.replay_buffer[changed].abs().max() > 1.0

    model = frozen_chains(capacity=4000, reinit_prob=0.3)
    before = model.replay_buffer.clone()
    model.train()(vectors=torch.randn(4000, 2))
    restarted = float((model.replay_buffer != before).any(-1).float().mean())
    assert restarted == pytest.approx(0.3, abs=0.03)


def test_training_negatives_come_from_sgld_on_the_buffer_and_the_loss_is_contrastive():
    torch.manual_seed(0)
    model = build(alpha=0.5, mcmc={"n_steps": 3, "step_size": 0.05}, sample_buffer={"capacity": 16, "reinit_prob": 0.0})
    data = torch.randn(4, 2)
    before = model.replay_buffer.clone()
    output = model.train()(vectors=data)
    moved = (model.replay_buffer != before).any(-1)
    assert int(moved.sum()) == 4  # the 4 chains of this batch took SGLD steps
    positive, negative = model.energy(data), model.energy(model.replay_buffer[moved])
    contrastive = positive.mean() - negative.mean()
    torch.testing.assert_close(output.contrastive_loss, contrastive.detach())
    torch.testing.assert_close(output.energy_l2_loss, 0.5 * (positive.square() + negative.square()).mean().detach())
    torch.testing.assert_close(output.loss, output.contrastive_loss + output.energy_l2_loss)
    output.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_validation_loss_draws_nothing_and_changes_nothing():
    model = build(sample_buffer={"capacity": 16})
    data = torch.randn(20, 2)
    before = model.replay_buffer.clone()
    state = torch.get_rng_state()
    with torch.no_grad():
        first, second = model.eval()(vectors=data).loss, model(vectors=data).loss
    assert torch.equal(first, second) and torch.equal(model.replay_buffer, before)
    assert torch.equal(torch.get_rng_state(), state)
    negatives = before[torch.arange(20) % 16]
    expected = model.energy(data).mean() - model.energy(negatives).mean()
    torch.testing.assert_close(model(vectors=data).contrastive_loss, expected.detach())


# --- sampling ------------------------------------------------------------------------------------------


def test_samples_are_seeded_leave_the_buffer_alone_and_images_stay_in_range():
    model = build("deep_ebm", "image", input_shape=[1, 8, 8], mcmc={"step_size": 1.0, "noise_scale": 0.5})
    before = model.replay_buffer.clone()
    draw = lambda seed: model.sample(6, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    samples = draw(0)
    assert samples.shape == (6, 1, 8, 8) and samples.dtype == torch.float32
    assert torch.equal(samples, draw(0)) and not torch.equal(samples, draw(1))
    assert samples.min() >= -1 and samples.max() <= 1 and samples.abs().max() == 1.0  # clamped, and it mattered
    assert torch.equal(model.replay_buffer, before)
    assert all(p.grad is None for p in model.parameters())


def test_sample_from_noise_or_from_the_buffer():
    frozen = {"n_steps": 1, "step_size": 1e-30, "noise_scale": 0.0}
    from_buffer = build(mcmc=frozen, sample_buffer={"capacity": 8})
    samples = from_buffer.sample(50, generator=torch.Generator().manual_seed(0))
    assert all((row == from_buffer.replay_buffer).all(-1).any() for row in samples)
    from_noise = build(mcmc=frozen, sample_buffer={"capacity": 8, "sample_from": "noise", "init_range": 4.0})
    samples = from_noise.sample(2000, generator=torch.Generator().manual_seed(0))
    assert not any((row == from_noise.replay_buffer).all(-1).any() for row in samples[:50])
    assert samples.abs().max() <= 4.0 and samples.std(0).min() == pytest.approx(4 / math.sqrt(3), rel=0.05)


def test_sample_steps_default_to_the_training_steps():
    model = build(mcmc={"n_steps": 2, "step_size": 0.1})
    longer = build(mcmc={"n_steps": 2, "step_size": 0.1, "sample_steps": 7})
    longer.load_state_dict(model.state_dict())
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    start = model.replay_buffer[torch.randint(64, (5,), generator=generator())]
    expected = langevin(model.energy, start, n_steps=2, step_size=0.1, generator=_after_pick(generator(), 5))
    torch.testing.assert_close(model.sample(5, generator=generator()), expected)
    assert not torch.equal(longer.sample(5, generator=generator()), expected)


def _after_pick(generator, count):
    torch.randint(64, (count,), generator=generator)  # the draw sample() makes first, to pick the chains
    return generator


# --- user errors -----------------------------------------------------------------------------------------


def test_conditions_and_data_of_another_shape_are_user_errors():
    model = build()
    with pytest.raises(FoundryError, match="unconditional"):
        model.sample(2, conditions=torch.tensor([0, 1]))
    with pytest.raises(FoundryError, match=r"shape \[2\].*shape \[3\].*model.input_shape"):
        model(vectors=torch.zeros(4, 3))
    with pytest.raises(FoundryError, match="needs a batch with 'vectors'"):
        model()
    with pytest.raises(FoundryError, match=r"for image data must be \[channels, height, width\] \(images\), not \[2\]"):
        build(modality="image")
