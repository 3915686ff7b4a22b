"""The BERT plugin: conformance, the model interface, pooled output, checkpoints, HF interop."""

from __future__ import annotations

import pytest
import torch
import transformers
from foundry_plugin_bert.config import BertOptions

import model_foundry
from model_foundry.errors import FoundryError
from model_foundry.testing import check_architecture
from model_foundry.text.modeling import masked_lm_loss


def test_conformance():
    check_architecture("bert")


def test_forward_is_bidirectional_with_masked_loss(tiny_config):
    torch.manual_seed(0)
    model = model_foundry.create_model(tiny_config).eval()
    input_ids = torch.randint(0, tiny_config.vocab_size, (2, 10))
    labels = torch.full_like(input_ids, -100)
    labels[:, 3] = input_ids[:, 3]
    output = model(input_ids, labels=labels)
    assert output["loss"] is output.loss
    assert torch.allclose(output.loss, masked_lm_loss(output.logits, labels))
    changed = input_ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % tiny_config.vocab_size
    assert not torch.allclose(model(changed).logits[:, 0], output.logits[:, 0])  # sees the future
    rich = model(input_ids, output_hidden_states=True, output_attentions=True)
    assert len(rich.hidden_states) == 3 and len(rich.attentions) == 2


def test_token_type_ids(tiny_config):
    model = model_foundry.create_model(tiny_config).eval()
    input_ids = torch.randint(0, tiny_config.vocab_size, (1, 8))
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    assert not torch.allclose(model(input_ids, token_type_ids=segments).logits, model(input_ids).logits)
    with pytest.raises(FoundryError, match="type_vocab_size is 2"):
        model(input_ids, token_type_ids=segments * 2)


@pytest.mark.parametrize("pooler_type", ["first", "mean"])
def test_pooled_output(tiny_config, pooler_type):
    model = model_foundry.create_model(tiny_config.evolve(bert=BertOptions(pooler_type=pooler_type)))
    model.eval()
    input_ids = torch.randint(0, tiny_config.vocab_size, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    states = model(input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    pooled = model.pooled_output(input_ids, attention_mask=mask)
    expected = states[:, 0] if pooler_type == "first" else torch.stack([states[0].mean(0), states[1, :3].mean(0)])
    assert pooled.shape == (2, 64)
    assert torch.allclose(pooled, expected, atol=1e-6)


def test_import_transformers_directory(tmp_path):
    torch.manual_seed(0)
    source = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
        max_position_embeddings=40, type_vocab_size=3, hidden_act="relu")).eval()
    source.save_pretrained(tmp_path / "hf")
    model = model_foundry.load(tmp_path / "hf")
    assert model.architecture == "bert" and model.config.bert.type_vocab_size == 3
    ids = torch.randint(0, 101, (2, 9))
    segments = torch.randint(0, 3, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids, token_type_ids=segments).logits, source(ids, token_type_ids=segments).logits)
    model.save_pretrained(tmp_path / "foundry")
    with torch.no_grad():
        assert torch.equal(model_foundry.load(tmp_path / "foundry")(ids).logits, source(ids).logits)


def test_import_refuses_a_decoder(tmp_path):
    transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        is_decoder=True)).save_pretrained(tmp_path / "hf")
    with pytest.raises(FoundryError, match="is_decoder"):
        model_foundry.load(tmp_path / "hf")
