"""The shared encoder/decoder networks: shapes for 8x8, 28x28, 32x32 images and vectors, and located config errors."""

from __future__ import annotations

import attrs
import pytest
import torch
from torch import nn

from model_foundry import FoundryError
from model_foundry.config import parse_yaml
from model_foundry.config.structuring import Structurer
from model_foundry.networks.config import DecoderConfig, EncoderConfig
from model_foundry.networks.modules import (
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    build_decoder,
    build_encoder,
)


@attrs.frozen
class Holder:
    encoder: EncoderConfig = attrs.field(factory=EncoderConfig)
    decoder: DecoderConfig = attrs.field(factory=DecoderConfig)


def problems_of(text: str) -> list[str]:
    source = parse_yaml(text, "net.yaml")
    structurer = Structurer(source)
    structurer.structure(source.data, Holder, ())
    return [str(problem) for problem in structurer.problems]


@pytest.mark.parametrize("shape, hidden", [((1, 8, 8), (16, 32, 64)), ((1, 28, 28), (8, 16)), ((3, 32, 32), (8, 8, 16))])
@pytest.mark.parametrize("norm", ["none", "batch", "layer", "group"])
def test_conv_networks_map_images_to_features_and_back(shape, hidden, norm):
    encoder = build_encoder(EncoderConfig(input_shape=shape, hidden_dims=hidden, normalization=norm), out_features=10)
    decoder = build_decoder(DecoderConfig(output_shape=shape, latent_dim=5, hidden_dims=hidden[::-1], normalization=norm))
    assert isinstance(encoder, ConvEncoder) and isinstance(decoder, ConvDecoder)
    assert encoder(torch.randn(4, *shape)).shape == (4, 10)
    assert decoder(torch.randn(4, 5)).shape == (4, *shape)


def test_the_conv_decoder_projects_to_the_ceiling_start_and_crops_top_left():
    decoder = ConvDecoder(DecoderConfig(output_shape=(1, 28, 28), latent_dim=3, hidden_dims=(8, 8, 8)))
    assert decoder.start == (8, 4, 4)  # ceil(28 / 8): 4 -> 32 after three doublings, cropped to 28
    grid = decoder.upsample(decoder.project(torch.randn(2, 3)).view(2, *decoder.start))
    assert grid.shape == (2, 8, 32, 32)
    # every output pixel depends on grid rows and columns 0..28 only (3x3 conv: one more)
    z = torch.randn(1, 3, requires_grad=True)
    captured = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    decoder.upsample.register_forward_hook(keep)
    decoder(z).sum().backward()
    gradient = captured[0].grad.abs().sum(dim=(0, 1))
    assert gradient[28:, :].sum() == 0 and gradient[:, 28:].sum() == 0 and gradient[:28, :28].sum() > 0


def test_no_upsampling_stages_project_straight_to_the_image():
    decoder = build_decoder(DecoderConfig(output_shape=(2, 5, 7), latent_dim=4, hidden_dims=()))
    assert decoder.start == (2, 5, 7) and decoder(torch.randn(3, 4)).shape == (3, 2, 5, 7)


def test_vectors_use_mlps_and_images_may_too():
    encoder = build_encoder(EncoderConfig(input_shape=(2,), hidden_dims=(32, 32)), out_features=4)
    decoder = build_decoder(DecoderConfig(output_shape=(2,), latent_dim=2, hidden_dims=(32,), output_activation="tanh"))
    assert isinstance(encoder, MLPEncoder) and isinstance(decoder, MLPDecoder)
    assert encoder(torch.randn(6, 2)).shape == (6, 4)
    out = decoder(torch.randn(6, 2) * 100)
    assert out.shape == (6, 2) and out.abs().max() <= 1
    image_mlp = build_encoder(EncoderConfig(input_shape=(1, 8, 8), kind="mlp", hidden_dims=(16,)), out_features=3)
    assert isinstance(image_mlp, MLPEncoder) and image_mlp(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert build_decoder(DecoderConfig(output_shape=(1, 8, 8), kind="mlp", latent_dim=3))(torch.randn(2, 3)).shape == (2, 1, 8, 8)


def test_activations_and_spectral_norm_are_built_as_named():
    encoder = build_encoder(EncoderConfig(input_shape=(1, 8, 8), activation="leaky_relu", spectral_norm=True), 1)
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in encoder.modules())
    convolution = encoder.convolutions[0]
    assert nn.utils.parametrize.is_parametrized(convolution, "weight")
    for _ in range(20):  # power iterations converge in training mode
        encoder(torch.randn(2, 1, 8, 8))
    with torch.no_grad():
        assert torch.linalg.matrix_norm(convolution.weight.flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.05)
    plain = build_encoder(EncoderConfig(input_shape=(1, 8, 8), activation="gelu"), 1)
    assert not nn.utils.parametrize.is_parametrized(plain.convolutions[0], "weight")
    assert any(isinstance(m, nn.GELU) for m in plain.modules())


def test_a_decoder_that_cannot_reach_the_image_size_is_a_located_error():
    problems = problems_of("decoder:\n  output_shape: [1, 8, 8]\n  hidden_dims: [8, 8, 8, 8]\n")
    assert problems == [
        "net.yaml:3:16: decoder.hidden_dims: a conv decoder with 4 stride-2 upsampling stages (one per hidden_dims "
        "entry) makes at least 16x16 from a 1x1 start, larger than the 8x8 output_shape; use at most 3 hidden_dims"
    ]
    assert problems_of("decoder:\n  output_shape: [1, 8, 8]\n  hidden_dims: [8, 8, 8]\n") == []
    assert problems_of("decoder:\n  output_shape: [1, 8, 8]\n  kind: mlp\n  hidden_dims: [8, 8, 8, 8]\n") == []
    with pytest.raises(FoundryError, match="use at most 3 hidden_dims"):
        ConvDecoder(DecoderConfig(output_shape=(1, 8, 8), hidden_dims=(8, 8, 8, 8)))


def test_bad_shapes_kinds_and_names_are_located():
    problems = problems_of(
        "encoder:\n  input_shape: [8, 8]\n  latent_dim: 0\n  activation: rellu\n"
        "decoder:\n  output_shape: [2]\n  kind: conv\n  hidden_dims: [4, 0]\n"
    )
    assert problems[0].startswith("net.yaml:4:15: encoder.activation: 'rellu' is not one of: relu,")
    assert "did you mean 'relu'" in problems[0]
    assert problems[1] == "net.yaml:3:15: encoder.latent_dim: must be > 0, got 0"
    assert problems[2:] == [
        "net.yaml:7:9: decoder.kind: a conv network needs an image shape [C, H, W], and output_shape is [2]; use kind: mlp",
        "net.yaml:8:16: decoder.hidden_dims: widths must be >= 1, got [4, 0]",
    ]
    assert problems_of("encoder:\n  input_shape: [8, 8]\n") == [
        "net.yaml:2:16: encoder.input_shape: must be [C, H, W] (images) or [D] (vectors), got [8, 8]"
    ]
