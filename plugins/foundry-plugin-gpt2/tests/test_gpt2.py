"""The GPT-2 plugin: conformance, the model interface, KV-cache generation, checkpoints, HF interop."""

from __future__ import annotations

import json
import os

import pytest
import torch
import transformers

import model_foundry
from model_foundry.errors import FoundryError
from model_foundry.testing import check_architecture
from model_foundry.text.blocks import TransformerConfig
from model_foundry.text.modeling import causal_lm_loss


def test_conformance():
    check_architecture("gpt2")


def test_forward_loss_and_optional_outputs(tiny_config):
    torch.manual_seed(0)
    model = model_foundry.create_model(tiny_config)
    input_ids = torch.randint(0, tiny_config.vocab_size, (2, 10))
    labels = input_ids.clone()
    labels[:, -3:] = -100
    plain = model(input_ids, labels=labels)
    assert set(plain) == {"loss", "logits"} and plain.hidden_states is None and plain.attentions is None
    assert torch.allclose(plain.loss, causal_lm_loss(plain.logits, labels))
    rich = model(input_ids, output_hidden_states=True, output_attentions=True)
    assert len(rich.hidden_states) == 3 and rich.hidden_states[-1].shape == (2, 10, 64)
    assert len(rich.attentions) == 2 and rich.attentions[0].shape == (2, 4, 10, 10)
    assert torch.allclose(rich.logits, plain.logits, atol=1e-5)
    # Causal: a later token never changes an earlier position's logits.
    changed = input_ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % tiny_config.vocab_size
    assert torch.allclose(model(changed).logits[:, :-1], plain.logits[:, :-1], atol=1e-5)


def test_kv_cache_generation_equals_greedy_full_forward(tiny_config):
    torch.manual_seed(0)
    model = model_foundry.create_model(tiny_config).eval()
    prompt = torch.randint(0, tiny_config.vocab_size, (2, 5))
    generated = model.generate(prompt, max_new_tokens=12)
    expected = prompt
    with torch.no_grad():
        for _ in range(12):
            expected = torch.cat([expected, model(expected).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, expected)


def test_generation_stops_at_max_position_embeddings(tiny_config):
    short = TransformerConfig(layers=1, hidden_size=32, attention_heads=2, max_position_embeddings=8)
    model = model_foundry.create_model(tiny_config.evolve(transformer=short))
    with pytest.raises(FoundryError, match="max_position_embeddings"):
        model.generate(torch.zeros(1, 4, dtype=torch.long), max_new_tokens=6)
    assert model.generate(torch.zeros(1, 4, dtype=torch.long), max_new_tokens=5).shape == (1, 9)


def test_embeddings_and_resize_survive_save_load(tiny_config, tmp_path):
    model = model_foundry.create_model(tiny_config)
    assert model.get_input_embeddings().weight.shape == (tiny_config.vocab_size, 64)
    model.resize_token_embeddings(tiny_config.vocab_size + 8)
    assert model.config.vocab_size == tiny_config.vocab_size + 8
    assert model.hf_model.lm_head.weight is model.get_input_embeddings().weight  # still tied
    model.save_pretrained(tmp_path / "ckpt")
    loaded = model_foundry.load(tmp_path / "ckpt")
    assert loaded.get_input_embeddings().num_embeddings == tiny_config.vocab_size + 8
    ids = torch.tensor([[1, 2, tiny_config.vocab_size + 3]])
    assert torch.equal(loaded(ids).logits, model.eval()(ids).logits)


def test_checkpoint_layout_with_tokenizer(tiny_config, foundry_tokenizer, tmp_path):
    tokenizer = foundry_tokenizer("bpe")
    model = model_foundry.create_model(tiny_config)
    model_foundry.save(model, tmp_path / "ckpt", tokenizer=tokenizer, metrics={"loss": 1.5})
    files = set(os.listdir(tmp_path / "ckpt"))
    assert {"config.yaml", "model.safetensors", "foundry.json", "tokenizer.json"} <= files
    meta = json.loads((tmp_path / "ckpt" / "foundry.json").read_text())
    assert meta["architecture"] == "gpt2" and meta["distribution"] == "foundry-plugin-gpt2"
    assert meta["num_parameters"] == model.num_parameters() and meta["metrics"] == {"loss": 1.5}


def test_import_transformers_directory(tmp_path):
    torch.manual_seed(0)
    source = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=3, n_inner=96, activation_function="gelu_new",
        layer_norm_epsilon=1e-6)).eval()
    source.save_pretrained(tmp_path / "hf")
    model = model_foundry.load(tmp_path / "hf")
    assert model.architecture == "gpt2"
    block = model.config.transformer
    assert (block.hidden_size, block.attention_heads, block.feed_forward_size, block.activation_function) == (
        48, 3, 96, "gelu_new")
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, source(ids).logits)
    model.save_pretrained(tmp_path / "foundry")
    with torch.no_grad():
        assert torch.equal(model_foundry.load(tmp_path / "foundry")(ids).logits, source(ids).logits)


def test_import_refuses_what_it_cannot_express(tmp_path):
    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2, scale_attn_by_inverse_layer_idx=True,
    )).save_pretrained(tmp_path / "hf")
    with pytest.raises(FoundryError, match="scale_attn_by_inverse_layer_idx"):
        model_foundry.load(tmp_path / "hf")
