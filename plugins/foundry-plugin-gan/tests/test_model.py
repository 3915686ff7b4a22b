"""The GAN model: its parts, its samples, its modalities and the errors a user can make."""

from __future__ import annotations

import pytest
import torch
from foundry_plugin_gan.config import DCGANConfig, GANConfig, LSGANConfig, WGANConfig
from foundry_plugin_gan.losses import LOSSES

from model_foundry import ConfigError, FoundryError, cli, create_model

VECTORS = {"generator": {"output_shape": [2], "output_activation": "none"}, "discriminator": {"input_shape": [2]}}


def build(architecture="gan", modality=None, **fields):
    return create_model({"architecture": architecture, "preset": "tiny", **fields}, modality=modality)


@pytest.mark.parametrize(("config", "architecture", "loss"), [
    (GANConfig(), "gan", "non_saturating"), (DCGANConfig(), "dcgan", "non_saturating"),
    (WGANConfig(), "wgan", "wasserstein"), (LSGANConfig(), "lsgan", "least_squares"),
])
def test_a_typed_config_names_its_architecture_and_its_loss(config, architecture, loss):
    model = create_model(config)
    assert model.architecture == architecture and model.loss is LOSSES[loss]
    kind = "conv" if architecture == "dcgan" else "mlp"
    assert model.config.generator.resolved_kind == model.config.discriminator.resolved_kind == kind
    assert set(model.parameter_groups()) == {"generator", "discriminator"}


def test_each_part_is_the_configured_loss_of_the_discriminators_scores():
    torch.manual_seed(0)
    model = build("lsgan")
    real = torch.rand(6, 1, 8, 8) * 2 - 1
    torch.manual_seed(1)
    discriminator_loss = model(pixel_values=real).loss
    torch.manual_seed(1)
    fake = model.generator(torch.randn(6, 8))
    expected = LOSSES["least_squares"].discriminator(model.discriminate(real), model.discriminate(fake))
    torch.testing.assert_close(discriminator_loss, expected)
    torch.manual_seed(2)
    generator_loss = model(pixel_values=real, part="generator").loss
    torch.manual_seed(2)
    torch.testing.assert_close(generator_loss, LOSSES["least_squares"].generator(model.discriminate(model.generator(torch.randn(6, 8)))))
    with pytest.raises(ValueError, match="part must be"):
        model(pixel_values=real, part="critic")


def test_the_validation_loss_is_repeatable_and_leaves_the_training_rng_alone():
    model = build("wgan").eval()
    real = torch.rand(6, 1, 8, 8) * 2 - 1
    torch.manual_seed(0)
    with torch.no_grad():
        first, second = model(pixel_values=real), model(pixel_values=real)
    assert torch.equal(first.loss, second.loss) and float(first.gradient_penalty_loss) > 0
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(0).get_state())


def test_samples_are_the_generators_images_of_noise_from_the_given_generator():
    model = build("dcgan").eval()
    samples = model.sample(5, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(5, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(samples, model.generator(noise))
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.float32
    assert samples.abs().max() <= 1  # tanh: the images' range
    with pytest.raises(FoundryError, match="unconditional"):
        model.sample(2, conditions=torch.tensor([0, 1]))


@pytest.mark.parametrize("architecture", ["gan", "wgan", "lsgan"])
def test_two_dimensional_points_are_modeled_with_mlps(architecture):
    model = build(architecture, modality="vector", **VECTORS)
    assert model.config.modality == "vector"
    loss = model(vectors=torch.randn(4, 2)).loss
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 2)


def test_data_of_another_shape_is_a_clear_error():
    model = build()
    with pytest.raises(FoundryError, match=r"shape \[1, 8, 8\] .*model.generator.output_shape.*shape \[1, 28, 28\]; set model.generator.output_shape and model.discriminator.input_shape to \[1, 28, 28\]"):
        model(pixel_values=torch.zeros(2, 1, 28, 28))
    with pytest.raises(ConfigError, match=r"model.generator.output_shape: must be \[D\] for vector data, not \[1, 8, 8\]"):
        build(modality="vector")


def test_spectral_norm_bounds_each_layer_of_the_discriminator():
    model = build("wgan", discriminator={"spectral_norm": True}, gradient_penalty_weight=0.0)
    model.train()
    for _ in range(30):  # power iterations converge in training-mode passes
        model.discriminate(torch.randn(4, 1, 8, 8))
    linear = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and all(float(torch.linalg.matrix_norm(m.weight.detach(), 2)) == pytest.approx(1.0, rel=1e-3) for m in linear)


BAD_INPUTS = [
    ("n_critic: 0", "model.n_critic: must be > 0, got 0"),
    ("generator: {latent_dim: 0}", "model.generator.latent_dim: must be > 0, got 0"),
    ("generator: {output_shape: [1, 28, 28]}",
     "model.generator.output_shape: is [1, 28, 28], and discriminator.input_shape is [1, 8, 8]"),
    ("loss: wasserstein", "model.loss: the wasserstein loss needs a Lipschitz critic"),
    ("gradient_penalty_weight: 10\n  discriminator: {normalization: batch}", "model.discriminator.normalization: batch normalization"),
]


def test_bad_inputs_are_located_config_errors(tmp_path, capsys):
    """Each mistake, through `foundry validate`: exit 2, FILE:LINE:COL: key: message."""
    for number, (fields, message) in enumerate(BAD_INPUTS):
        path = tmp_path / f"bad{number}.yaml"
        path.write_text(f"model:\n  architecture: gan\n  preset: tiny\n  {fields}\ndata:\n  kind: digits\n")
        assert cli.main(["validate", str(path)]) == 2
        error = capsys.readouterr().err
        line = 4 + fields.count("\n")  # where the mistaken key is
        assert f"{path}:{line}:" in error and message in error, error
