"""The transformers adapter: an architecture's field mapping carries every field to transformers
and back, and an import refuses the settings the mapping says it cannot express."""

from __future__ import annotations

import pytest
import torch

import model_foundry
from model_foundry.cli import main
from model_foundry.config import load_model_config
from model_foundry.errors import FoundryError

# Every Foundry field the adapters map, each away from its default (and from the presets).
UNUSUAL = {
    "vocab_size": 97, "tie_word_embeddings": False,
    "transformer": {
        "layers": 3, "hidden_size": 48, "attention_heads": 3, "intermediate_hidden_size": 80,
        "activation_function": "relu", "dropout": 0.05, "attention_dropout": 0.15, "max_position_embeddings": 40,
        "layer_norm_eps": 1e-6, "initializer_range": 0.03,
    },
}
OWN_FIELDS = {"gpt2": {}, "bert": {"bert": {"type_vocab_size": 3}}}


def unusual(architecture):
    return load_model_config({"architecture": architecture, **UNUSUAL, **OWN_FIELDS[architecture]})


@pytest.mark.parametrize("architecture", sorted(OWN_FIELDS))
def test_every_mapped_field_goes_to_transformers_and_back(architecture, tmp_path):
    model = model_foundry.create_model(unusual(architecture)).eval()
    model_foundry.save(model, tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--to", "hf", str(tmp_path / "hf")]) == 0
    imported = model_foundry.load(tmp_path / "hf")
    assert imported.config.params == model.config.params
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        assert torch.equal(imported(ids).logits, model(ids).logits)


@pytest.mark.parametrize(("architecture", "setting"), [("gpt2", "scale_attn_by_inverse_layer_idx"),
                                                      ("bert", "is_decoder")])
def test_an_import_names_a_setting_the_architecture_cannot_express(architecture, setting, tmp_path):
    model = model_foundry.create_model(unusual(architecture))
    model.hf_model.config.update({setting: True})
    model.hf_model.save_pretrained(tmp_path / "hf")
    with pytest.raises(FoundryError, match=f"cannot import this {architecture}: .*{setting}=True"):
        model_foundry.load(tmp_path / "hf")


TEXT = "the cat sat on the mat.\nthe dog ate the bone.\na bird sang in the tree.\n" * 20


@pytest.mark.parametrize(("architecture", "tokenizer_type", "auto_class"), [
    ("gpt2", "bpe", "AutoModelForCausalLM"), ("bert", "wordpiece", "AutoModelForMaskedLM")])
def test_an_export_loads_in_transformers_with_its_tokenizer_and_gives_identical_logits(
        architecture, tokenizer_type, auto_class, tmp_path):
    import transformers

    from model_foundry import train_tokenizer
    from model_foundry.text.config import TokenizerConfig

    (tmp_path / "train.txt").write_text(TEXT, encoding="utf-8")
    options = TokenizerConfig(tokenizer_type=tokenizer_type, vocab_size=300, min_frequency=1)
    tokenizer = train_tokenizer(options, [tmp_path / "train.txt"])
    torch.manual_seed(0)
    config = load_model_config({"architecture": architecture, "preset": "tiny", "vocab_size": len(tokenizer)})
    model = model_foundry.create_model(config).eval()
    model_foundry.save(model, tmp_path / "ckpt", tokenizer=tokenizer)
    assert main(["export", str(tmp_path / "ckpt"), "--to", "hf", str(tmp_path / "hf")]) == 0
    hf = getattr(transformers, auto_class).from_pretrained(tmp_path / "hf").eval()
    texts = ["the cat ate the bone", "a bird"]
    batch = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(texts, padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], tokenizer(texts, padding=True, return_tensors="pt")["input_ids"])
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        assert torch.equal(hf(**inputs).logits, model(**inputs).logits)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(hf.config, name) == getattr(tokenizer, name), name
