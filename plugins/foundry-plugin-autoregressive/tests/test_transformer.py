"""The pixel/sample Transformer: strict causality, 2-D positions, a normalised likelihood, cached generation."""

from __future__ import annotations

import pytest
import torch

from model_foundry.errors import FoundryError


@pytest.mark.parametrize("modality, fields", [("image", {"data_shape": [2, 2, 3]}), ("audio", {"data_shape": [12]})])
def test_each_prediction_depends_on_exactly_the_codes_before_it(build, modality, fields):
    model = build("transformer", modality, **fields).double().eval()
    sequence = torch.randint(model.quantizer.levels, (1, model.max_length))
    with torch.no_grad():
        base = model.logits(sequence)
        for q in range(model.max_length):
            changed = sequence.clone()
            changed[0, q] = (changed[0, q] + 1) % model.quantizer.levels
            logits = model.logits(changed)
            assert torch.equal(logits[:, : q + 1], base[:, : q + 1]), f"a prediction at or before {q} saw code {q}"
            assert (logits[:, q + 1 :] != base[:, q + 1 :]).any(-1).all(), f"a prediction after {q} ignored code {q}"


def test_the_sequence_runs_over_rows_then_columns_then_channels(build):
    model = build("transformer", data_shape=[2, 3, 4])
    codes = torch.arange(24).view(1, 2, 3, 4)
    sequence = model.to_sequence(codes)
    assert sequence[0, :3].tolist() == [0, 12, 1]  # pixel (0, 0) channel 0, channel 1, then pixel (0, 1)
    assert torch.equal(model.from_sequence(sequence), codes)
    rows, columns, channels = model.positions.tables
    p = 2 * (4 * 1 + 2) + 1  # row 1, column 2, channel 1
    torch.testing.assert_close(model.positions(p, 1)[0], rows[1] + columns[2] + channels[1])


@pytest.mark.parametrize("modality, fields", [
    ("image", {"data_shape": [1, 1, 3], "levels": 4}), ("image", {"data_shape": [2, 1, 1], "levels": 4, "num_classes": 3}),
    ("audio", {"data_shape": [3], "levels": 4}),
])
def test_the_probabilities_of_every_example_sum_to_one(build, every_example, modality, fields):
    model = build("transformer", modality, **fields).double().eval()
    examples = every_example(4, tuple(fields["data_shape"]), model.quantizer.values).double()
    key = "pixel_values" if modality == "image" else "input_values"
    labels = torch.full((len(examples),), 2) if "num_classes" in fields else None
    with torch.no_grad():
        total = model.log_pmf(**{key: examples}, class_labels=labels).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=total.dtype))


@pytest.mark.parametrize("modality, fields", [("image", {"data_shape": [2, 3, 3], "num_classes": 2}),
                                              ("audio", {"data_shape": [20]})])
def test_cached_generation_draws_exactly_the_samples_of_full_recomputation(build, modality, fields):
    model = build("transformer", modality, **fields).double()
    model.train()  # sampling switches to eval mode itself: dropout would draw outside the generator
    conditions = torch.tensor([0, 1, 1]) if "num_classes" in fields else None

    def draw(cached: bool) -> torch.Tensor:
        return model.sample(3, generator=torch.Generator().manual_seed(3), conditions=conditions, cached=cached)

    cached = draw(True)
    assert cached.shape == (3, *fields["data_shape"]) and cached.dtype == torch.float32
    assert torch.equal(cached, draw(False))
    assert model.training


def test_the_cache_computes_the_logits_of_the_full_pass(build):
    model = build("transformer", data_shape=[1, 3, 3]).double().eval()
    sequence = torch.randint(5, (2, 9))
    with torch.no_grad():
        full = model.logits(sequence)
        cache, steps = None, []
        for p in range(9):
            inputs = model._inputs(sequence[:, p - 1 : p] if p else None, p, 1, None, 2)
            logits, cache = model._run(inputs, cache)
            steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-10, atol=1e-10)


def test_audio_clips_shorter_than_the_longest_are_scored_and_longer_ones_refused(build):
    model = build("transformer", "audio", data_shape=[16]).eval()
    clip = torch.sin(torch.arange(16) / 2.0)[None] * 0.5
    with torch.no_grad():
        full, prefix = model.log_pmf(input_values=clip), model.log_pmf(input_values=clip[:, :10])
    assert prefix > full  # the prefix's probability is the sum over its continuations
    with pytest.raises(FoundryError, match="at most 16 samples.*has 20|at most 16 samples.*have 20"):
        model.log_prob(input_values=torch.zeros(1, 20))


def test_a_data_shape_of_the_other_modality_is_an_error(build):
    with pytest.raises(FoundryError, match=r"transformer for audio data must be \[length\], not \[1, 4, 4\]"):
        build("transformer", "audio", data_shape=[1, 4, 4])
    model = build("transformer")
    with pytest.raises(FoundryError, match=r"shape \[1, 4, 4\].*shape \[1, 8, 8\]"):
        model.log_prob(pixel_values=torch.zeros(1, 1, 8, 8))
