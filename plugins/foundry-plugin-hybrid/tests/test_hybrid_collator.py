"""The hybrid collator, the conformance checks, and a short training run through both."""

from __future__ import annotations

import pytest
import torch
from foundry_plugin_hybrid.collator import HybridCollator

import model_foundry
from model_foundry.config import load_model_config
from model_foundry.testing import check_architecture
from model_foundry.text.collators import CausalLMCollator, MaskedLMCollator
from model_foundry.text.config import TokenizerConfig

CORPUS = [
    "the cat sat on the mat.",
    "the dog sat on the log.",
    "a cat and a dog met on the mat.",
    "the dog and the cat sat on a log.",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(CORPUS * 3) + "\n")
    return model_foundry.train_tokenizer(TokenizerConfig(tokenizer_type="char", vocab_size=64, min_frequency=1), [path])


def examples_of(tokenizer, lines=CORPUS):
    return [{"input_ids": tokenizer(line, add_special_tokens=False)["input_ids"]} for line in lines]


def test_conformance():
    check_architecture("hybrid")


def test_collator_is_contributed_through_the_hook(tokenizer):
    collator = model_foundry.create_collator("hybrid", tokenizer, mlm_probability=0.3)
    assert isinstance(collator, HybridCollator)
    assert collator.masked.mlm_probability == 0.3


def test_causal_part_is_the_causal_collators_output(tokenizer):
    examples = examples_of(tokenizer)
    batch = HybridCollator(tokenizer, generator=0)(examples)
    expected = CausalLMCollator(tokenizer)(examples)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(batch[key], expected[key]), key
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["attention_mask"] == 0).any()  # the examples have different lengths: there is padding


def test_masked_part_is_the_masked_collators_output(tokenizer):
    examples = examples_of(tokenizer)
    batch = HybridCollator(tokenizer, mlm_probability=0.4, pad_to_multiple_of=8, generator=7)(examples)
    expected = MaskedLMCollator(tokenizer, mlm_probability=0.4, pad_to_multiple_of=8, generator=7)(examples)
    assert torch.equal(batch["mlm_input_ids"], expected["input_ids"])
    assert torch.equal(batch["mlm_labels"], expected["labels"])
    assert batch["input_ids"].shape == batch["mlm_input_ids"].shape
    assert batch["input_ids"].size(1) % 8 == 0
    selected = batch["mlm_labels"] != -100
    assert selected.any()
    assert torch.equal(batch["mlm_labels"][selected], batch["input_ids"][selected])
    assert torch.equal(batch["mlm_input_ids"][~selected], batch["input_ids"][~selected])
    assert (batch["mlm_input_ids"][selected] == tokenizer.mask_token_id).any()


def test_generator_is_shared_with_the_masked_collator(tokenizer):
    generator = torch.Generator().manual_seed(3)
    collator = HybridCollator(tokenizer, generator=generator)
    assert collator.generator is generator


def test_loss_falls_on_a_small_corpus(tokenizer):
    config = load_model_config({"architecture": "hybrid", "preset": "tiny", "vocab_size": len(tokenizer)})
    torch.manual_seed(0)
    model = model_foundry.create_model(config).train()
    collator = model_foundry.create_collator("hybrid", tokenizer, mlm_probability=0.3, generator=0)
    examples = examples_of(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        output = model(**collator(examples))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        history.append((output.loss.item(), output.clm_loss.item(), output.mlm_loss.item()))
    first, last = torch.tensor(history[:5]).mean(0), torch.tensor(history[-5:]).mean(0)
    assert (last < 0.6 * first).all(), f"losses (total, clm, mlm) went from {first.tolist()} to {last.tolist()}"
