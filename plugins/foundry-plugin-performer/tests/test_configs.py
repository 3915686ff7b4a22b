"""The model factory guide's configs, global defaults, and located errors for bad configs."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
from foundry_plugin_performer.model import PerformerDecoder, PerformerEncoder, PerformerEncoderDecoder

from model_foundry import ConfigError, create_model, load_config
from model_foundry.config import architecture_schema, load_model_config

CONFIGS = pathlib.Path(__file__).parent / "configs"
GUIDE_CONFIGS = sorted(CONFIGS.glob("*.yml"))


def foundry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_foundry.cli", *args], capture_output=True, text=True, timeout=120
    )


def write(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_guide_example_is_here():
    names = {p.name for p in GUIDE_CONFIGS}
    assert names == {
        "my_model.yml", "encoder_model.yml", "decoder_model.yml", "example_model.yml", "global_config.yml",
        "full_experiment.yml",
    }


@pytest.mark.parametrize("path", GUIDE_CONFIGS, ids=lambda p: p.stem)
def test_guide_config_validates_and_builds(path):
    model = create_model(load_config(path, sections=("model",)), device="meta")
    expected = {"encoder": PerformerEncoder, "decoder": PerformerDecoder, "encoder_decoder": PerformerEncoderDecoder}
    assert type(model) is expected[model.config.model_type]
    assert model.num_parameters() > 1_000_000


def _build(name: str):
    torch.manual_seed(0)
    return create_model(load_config(CONFIGS / name, sections=("model",))).eval()


def test_guide_usage_encoder():
    encoder = _build("encoder_model.yml")
    input_embeddings = torch.randn(2, 12, 256)
    encoded = encoder(input_embeddings)
    assert encoded.shape == input_embeddings.shape and torch.isfinite(encoded).all()


def test_guide_usage_decoder():
    lm = _build("decoder_model.yml")
    x = torch.randn(2, 12, 512)
    output = lm(x, use_causal_mask=True)
    assert output.shape == x.shape and torch.isfinite(output).all()


@pytest.mark.parametrize("name", ["my_model.yml", "global_config.yml"])
def test_guide_usage_seq2seq(name):
    seq2seq = _build(name).eval()
    source, target = torch.randn(2, 9, 512), torch.randn(2, 5, 512)
    output = seq2seq(source, target)
    assert output.shape == target.shape and torch.isfinite(output).all()
    # The decoder cross-attends by default: the source changes the output.
    assert not torch.allclose(output, seq2seq(torch.randn(2, 9, 512), target))
    with torch.no_grad():  # attention without autograd takes its own path; source and target differ in length
        torch.testing.assert_close(seq2seq(source, target), output, atol=1e-5, rtol=1e-4)


def test_global_config_is_inherited_and_own_keys_win(tmp_path):
    config = load_config(write(tmp_path, """
        model:
          architecture: performer
          model_type: encoder_decoder
          global_config: {dropout: 0.2, d_ff: 2, device: cpu, nb_features: 64}
          encoder: {d_model: 64, num_heads: 4, attention_type: linear, d_ff: 3}
          decoder: {d_model: 64, num_heads: 4, attention_type: causal_linear}
    """), sections=("model",)).model
    assert (config.encoder.dropout, config.encoder.d_ff, config.encoder.device) == (0.2, 3, "cpu")
    assert (config.decoder.dropout, config.decoder.d_ff, config.decoder.nb_features) == (0.2, 2, 64)
    assert "global_config" not in config.to_dict()
    again = load_model_config(config.to_dict())
    assert again.params == config.params


def test_guide_global_config_example():
    config = load_config(CONFIGS / "global_config.yml", sections=("model",)).model
    for block in (config.encoder, config.decoder):
        assert (block.dropout, block.batch_size, block.d_ff, block.device) == (0.1, 32, 4, "cpu")


def test_combined_file_model_only_and_full_validation():
    path = str(CONFIGS / "full_experiment.yml")
    ok = foundry("validate", path, "--model-only")
    assert ok.returncode == 0, ok.stderr
    full = foundry("validate", path)
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert f"{path}:18:1: global_config: unknown section 'global_config'" in full.stderr
    assert f"{path}:22:1: datasets: unknown section 'datasets'" in full.stderr
    assert "--model-only" in full.stderr


BAD_CONFIGS = [
    ("""
        model:
          architecture: performer
          model_type: encoder
          decoder: {d_model: 64}
    """, ["4:15: model.model_type: model_type 'encoder' needs its 'encoder' block",
          "5:12: model.decoder: model_type 'encoder' has no decoder"]),
    ("""
        model:
          architecture: performer
          model_type: decoder
          decoder:
            d_model: 100
            num_heads: 8
    """, ["7:16: model.decoder.num_heads: d_model (100) must be divisible by num_heads (8)"]),
    ("""
        model:
          architecture: performer
          model_type: encoder
          encoder:
            d_model: 64
            attention_type: causal_linear
    """, ["7:21: model.encoder.attention_type: an encoder attends in both directions"]),
    ("""
        model:
          architecture: performer
          model_type: decoder
          decoder:
            d_model: 64
            use_cross_attention: true
    """, ["7:26: model.decoder.use_cross_attention: a decoder-only model has no encoder"]),
    ("""
        model:
          architecture: performer
          model_type: encoder_decoder
          global_config: {d_model: 64, use_rezero: true, use_scalenorm: true}
          encoder: {attention_type: linear}
          decoder: {attention_type: linear, use_cross_attention: false}
    """, ["5:65: model.encoder.use_scalenorm: use_rezero and use_scalenorm are alternatives",
          "5:65: model.decoder.use_scalenorm: use_rezero and use_scalenorm are alternatives",
          "7:29: model.decoder.attention_type: a decoder attends causally",
          "7:58: model.decoder.use_cross_attention: the decoder of an encoder_decoder must attend"]),
    ("""
        model:
          architecture: performer
          model_type: encoder_decoder
          vocab_size: 100
          encoder: {d_model: 64, device: cuda:x}
          decoder: {d_model: 64, activation: swiglu, attention_typ: softmax, dropout: 1.5}
    """, ["6:34: model.encoder.device: must be a torch device",
          "7:38: model.decoder.activation: 'swiglu' is not one of: GELU, RELU, SILU, GEGLU, REGLU, SWIGLU; did you mean 'SWIGLU'?",
          "7:46: model.decoder.attention_typ: unknown key 'attention_typ'; did you mean 'attention_type'?",
          "7:79: model.decoder.dropout: must be in [0, 1)"]),
    ("""
        model:
          architecture: performer
          model_type: encoder_decoder
          vocab_size: 100
          encoder: {d_model: 64}
          decoder: {d_model: 64}
    """, ["5:15: model.vocab_size: token-level encoder_decoder models are not provided"]),
    ("""
        model:
          architecture: performer
          model_type: seq2seq
          global_config: {d_modle: 64}
    """, ["4:15: model.model_type: 'seq2seq' is not one of: encoder, decoder, encoder_decoder",
          "5:19: model.global_config.d_modle: unknown key 'd_modle'; did you mean 'd_model'?"]),
]


@pytest.mark.parametrize("text, expected", BAD_CONFIGS)
def test_bad_configs_are_located(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, sections=("model",))
    lines = str(caught.value).splitlines()
    assert len(caught.value.problems) == len(expected), lines
    for fragment in expected:
        assert any(line.startswith(f"{path}:{fragment}") for line in lines), (fragment, lines)


def test_cli_reports_located_errors_with_exit_2(tmp_path):
    path = write(tmp_path, BAD_CONFIGS[1][0])
    result = foundry("validate", path)
    assert result.returncode == 2
    assert f"{path}:7:16: model.decoder.num_heads: d_model (100) must be divisible by num_heads (8)" in result.stderr
    assert "Traceback" not in result.stderr


def test_objectives_follow_model_type(tmp_path):
    path = write(tmp_path, """
        model: {architecture: performer, preset: tiny-encoder}
        training: {objective: causal_lm}
    """)
    with pytest.raises(ConfigError, match="performer cannot train 'causal_lm' with these settings, only masked_lm"):
        load_config(path, sections=("model", "training"))


def test_json_schema_lists_global_config():
    schema = architecture_schema("performer")
    assert set(schema["properties"]["global_config"]["properties"]) >= {"d_model", "dropout", "device", "batch_size"}
    assert schema["properties"]["encoder"]["anyOf"][0]["properties"]["activation"]["enum"][-1] == "SWIGLU"
