"""Behaviour of the recurrent language models: causality, padding, generation, learning, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from model_foundry import checkpoint
from model_foundry.config import load_model_config
from model_foundry.errors import FoundryError
from model_foundry.factory import create_collator, create_model, train_tokenizer
from model_foundry.text.config import TokenizerConfig

ARCHITECTURES = ["lstm", "gru", "rnn"]
VOCAB = 23


def build(architecture: str, seed: int = 0, vocab_size: int = VOCAB, tie: bool = True, **rnn: Any) -> Any:
    config = load_model_config(
        {"architecture": architecture, "preset": "tiny", "vocab_size": vocab_size, "tie_word_embeddings": tie, "rnn": rnn}
    )
    torch.manual_seed(seed)
    return create_model(config).eval()


def random_ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_unidirectional_models_are_strictly_causal(architecture: str) -> None:
    model = build(architecture)
    ids = random_ids(2, 12)
    cut = 7
    perturbed = ids.clone()
    perturbed[:, cut:] = (perturbed[:, cut:] + 1) % VOCAB
    with torch.no_grad():
        original, changed = model(ids).logits, model(perturbed).logits
    torch.testing.assert_close(changed[:, :cut], original[:, :cut], rtol=0, atol=1e-6)
    assert not torch.allclose(changed[:, cut:], original[:, cut:])


def test_bidirectional_models_read_the_future() -> None:
    model = build("lstm", bidirectional=True)
    ids = random_ids(2, 12)
    perturbed = ids.clone()
    perturbed[:, -1] = (perturbed[:, -1] + 1) % VOCAB
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[:, 0], model(perturbed).logits[:, 0])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
def test_padding_never_changes_real_outputs(architecture: str, bidirectional: bool) -> None:
    model = build(architecture, bidirectional=bidirectional)
    lengths = [9, 4, 6]
    width = 13  # more padding than the longest sequence needs
    ids = random_ids(len(lengths), width, seed=2)  # padded positions hold arbitrary tokens, not a pad id
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for row, length in enumerate(lengths):
            alone = model(ids[row : row + 1, :length]).logits[0]
            torch.testing.assert_close(batched[row, :length], alone, rtol=1e-5, atol=1e-5)


def test_a_row_of_padding_only_leaves_the_other_rows_alone() -> None:
    model = build("lstm", bidirectional=True)
    ids = random_ids(2, 6)
    mask = torch.tensor([[1] * 6, [0] * 6])
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits[0], model(ids[:1]).logits[0])


def test_left_padding_is_refused_with_a_clear_message() -> None:
    model = build("gru")
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    with pytest.raises(FoundryError, match="expect right padding"):
        model(random_ids(2, 4), attention_mask=mask)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_generation_equals_full_forward_argmax_with_one_step_per_token(architecture: str) -> None:
    model = build(architecture, seed=3)
    prompt = random_ids(2, 5, seed=4)
    steps: list[int] = []
    model.recurrent.register_forward_hook(lambda _module, inputs, _output: steps.append(inputs[0].size(1)))
    new_tokens = 12
    output = model.generate(prompt, max_new_tokens=new_tokens)
    # The prompt is read once; every later token costs exactly one recurrent step.
    assert steps == [prompt.size(1)] + [1] * (new_tokens - 1)
    with torch.no_grad():
        predicted = model(output).logits.argmax(dim=-1)
    assert torch.equal(output[:, prompt.size(1) :], predicted[:, prompt.size(1) - 1 : -1])


def test_bidirectional_models_do_not_generate() -> None:
    model = build("lstm", bidirectional=True)
    assert model.supports_generation is False
    with pytest.raises(FoundryError, match="does not support generation"):
        model.generate(random_ids(1, 3), max_new_tokens=2)


def test_tied_embeddings_share_one_matrix_and_project_when_sizes_differ() -> None:
    same_size = build("lstm")
    assert same_size.lm_head.weight is same_size.embeddings.weight
    assert isinstance(same_size.projection, nn.Identity)
    both_ways = build("lstm", bidirectional=True)  # 2 x 32 outputs, 32-wide embeddings
    assert both_ways.lm_head.weight is both_ways.embeddings.weight
    assert (both_ways.projection.in_features, both_ways.projection.out_features) == (64, 32)
    untied = build("lstm", tie=False, bidirectional=True)
    assert untied.lm_head.weight is not untied.embeddings.weight
    assert isinstance(untied.projection, nn.Identity) and untied.lm_head.in_features == 64
    assert untied.max_sequence_length is None


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
def test_save_load_gives_identical_outputs_and_keeps_the_tie(tmp_path: Path, bidirectional: bool) -> None:
    model = build("gru", bidirectional=bidirectional)
    ids = random_ids(2, 8)
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    loaded = checkpoint.load(model.save_pretrained(tmp_path / "checkpoint"))
    assert loaded.lm_head.weight is loaded.embeddings.weight
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, loaded(ids, attention_mask=mask).logits)


def test_resize_token_embeddings_keeps_rows_tie_and_config(tmp_path: Path) -> None:
    model = build("rnn")
    before = model.embeddings.weight.detach().clone()
    model.resize_token_embeddings(VOCAB + 5)
    assert model.config.vocab_size == VOCAB + 5
    assert model.lm_head.weight is model.embeddings.weight
    assert torch.equal(model.embeddings.weight[:VOCAB], before)
    ids = torch.tensor([[VOCAB + 4, 0, 1]])
    loaded = checkpoint.load(model.save_pretrained(tmp_path / "resized"))
    with torch.no_grad():
        assert model(ids).logits.shape[-1] == VOCAB + 5
        assert torch.equal(model(ids).logits, loaded(ids).logits)


CORPUS = "the cat sat on the mat. the dog sat on the log. " * 12


@pytest.mark.parametrize(
    ("architecture", "bidirectional", "objective"),
    [("lstm", False, "causal_lm"), ("gru", False, "causal_lm"), ("rnn", False, "causal_lm"), ("lstm", True, "masked_lm")],
)
def test_loss_falls_on_a_small_corpus(tmp_path: Path, architecture: str, bidirectional: bool, objective: str) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text(CORPUS, encoding="utf-8")
    tokenizer = train_tokenizer(TokenizerConfig(tokenizer_type="char", vocab_size=64, min_frequency=1), [text])
    ids = tokenizer(CORPUS, add_special_tokens=False)["input_ids"]
    examples = [{"input_ids": ids[start : start + 32]} for start in range(0, len(ids) - 32, 32)]
    options = {"mlm_probability": 0.3, "generator": torch.Generator().manual_seed(0)} if bidirectional else {}
    collate = create_collator(objective, tokenizer, **options)
    model = build(architecture, vocab_size=len(tokenizer), bidirectional=bidirectional).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(60):
        loss = model(**collate(examples)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"loss went from {first:.3f} to {last:.3f}"
