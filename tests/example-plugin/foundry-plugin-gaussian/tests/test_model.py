"""The gaussian_mixture model: its density, its samples, its conditioning, its config."""

from __future__ import annotations

import math

import pytest
import torch

from model_foundry import ConfigError, FoundryError, create_model, load_config


def build(modality=None, **fields):
    return create_model({"architecture": "gaussian_mixture", "preset": "tiny", **fields}, modality=modality)


def test_log_prob_is_the_mixture_density():
    torch.manual_seed(0)
    model = build(num_components=3, data_shape=[2])
    x = torch.randn(5, 2)
    with torch.no_grad():
        model.logits.copy_(torch.tensor([[0.5, -1.0, 0.0]]))
        model.log_scales.normal_()
    weights, scales = model.logits[0].detach().softmax(-1), model.log_scales[0].detach().exp()
    density = sum(
        weights[k] * torch.distributions.Normal(model.means[0, k].detach(), scales[k]).log_prob(x).sum(-1).exp() for k in range(3)
    )
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(vectors=x), density.log())
        torch.testing.assert_close(model(vectors=x).loss, -density.log().mean())


def test_samples_follow_the_fitted_mixture():
    model = build(num_components=1, data_shape=[2])
    with torch.no_grad():
        model.means.copy_(torch.tensor([[[3.0, -2.0]]]))
        model.log_scales.copy_(torch.tensor([[[math.log(0.5), 0.0]]]))
    samples = model.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20_000, 2) and samples.dtype == torch.float32
    torch.testing.assert_close(samples.mean(0), torch.tensor([3.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.tensor([0.5, 1.0]), atol=0.03, rtol=0)


def test_images_are_flattened_and_sampled_in_their_layout():
    model = build("image", data_shape=[1, 4, 4])
    assert model.config.modality == "image"
    images = torch.rand(3, 1, 4, 4) * 2 - 1
    assert model.log_prob(pixel_values=images).shape == (3,)
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 4, 4)
    with pytest.raises(FoundryError, match=r"shape \[1, 4, 4\].*shape \[1, 8, 8\].*model.data_shape"):
        model.log_prob(pixel_values=torch.zeros(2, 1, 8, 8))


def test_a_conditional_model_samples_and_scores_each_class_with_its_own_mixture():
    torch.manual_seed(0)
    model = build(num_components=1, num_classes=2)
    with torch.no_grad():
        model.means.copy_(torch.tensor([[[-5.0, 0.0]], [[5.0, 0.0]]]))
    samples = model.sample(4, generator=torch.Generator().manual_seed(0), conditions=torch.tensor([0, 0, 1, 1]))
    assert (samples[:2, 0] < 0).all() and (samples[2:, 0] > 0).all()
    x = torch.tensor([[5.0, 0.0], [5.0, 0.0]])
    scores = model.log_prob(vectors=x, class_labels=torch.tensor([0, 1]))
    assert scores[1] > scores[0] + 10
    with pytest.raises(FoundryError, match="needs class_labels"):
        model.log_prob(vectors=x)
    with pytest.raises(FoundryError, match=r"0\.\.1, got \[2\]"):
        model.sample(1, conditions=torch.tensor([2]))


def test_an_unconditional_model_refuses_conditions_and_ignores_the_datas_labels():
    model = build()
    x = torch.randn(4, 2)
    torch.testing.assert_close(model.log_prob(vectors=x, class_labels=torch.tensor([0, 1, 0, 1])), model.log_prob(vectors=x))
    with pytest.raises(FoundryError, match="unconditional"):
        model.sample(2, conditions=torch.tensor([0, 1]))


def test_a_data_shape_of_another_modality_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  architecture: gaussian_mixture\n  data_shape: [8, 8]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3:\d+: model.data_shape: must be \[D\] \(vectors\) or \[channels"):
        load_config(path)
    with pytest.raises(FoundryError, match=r"for vector data must be \[D\] \(vectors\), not \[1, 8, 8\]"):
        build(data_shape=[1, 8, 8])


def test_the_data_section_chooses_the_modality(tmp_path):
    path = tmp_path / "digits.yaml"
    path.write_text("model:\n  architecture: gaussian_mixture\n  data_shape: [1, 8, 8]\ndata:\n  kind: digits\n")
    model = create_model(load_config(path, sections=("model", "data")))
    assert model.config.modality == "image"
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 8, 8)
