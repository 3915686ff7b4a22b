"""The core's collators: padding and labels for causal LM, BERT masking statistics for masked LM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import model_foundry
from model_foundry import FoundryError
from model_foundry.testing import isolated_registry
from model_foundry.text.collators import CausalLMCollator, MaskedLMCollator
from model_foundry.text.config import TokenizerConfig

DATA = Path(__file__).parent / "data"
FILES = [DATA / "hindi.txt", DATA / "english.txt"]


@pytest.fixture(autouse=True, scope="module")
def registry():
    with isolated_registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def tokenizer():
    config = TokenizerConfig(tokenizer_type="wordpiece", vocab_size=600, min_frequency=1)
    return model_foundry.train_tokenizer(config, FILES)


@pytest.fixture(scope="module")
def examples(tokenizer) -> list[dict[str, list[int]]]:
    """Sentences with [CLS]/[SEP] around them, of varied lengths."""
    lines = [line for f in FILES for line in f.read_text(encoding="utf-8").splitlines()]
    return [{"input_ids": tokenizer(line)["input_ids"]} for line in lines]


def test_causal_lm_pads_to_the_longest_and_ignores_padding_in_labels(tokenizer):
    collator = model_foundry.create_collator("causal_lm", tokenizer)
    batch = collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    pad = tokenizer.pad_token_id
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]
    assert all(tensor.dtype == torch.long for tensor in batch.values())


def test_labels_follow_the_attention_mask_even_when_pad_is_eos():
    class PadIsEos:
        pad_token_id = 3

    batch = CausalLMCollator(PadIsEos())([{"input_ids": [4, 3]}, {"input_ids": [4]}])
    assert batch["labels"].tolist() == [[4, 3], [4, -100]]


@pytest.mark.parametrize(("lengths", "multiple", "width"), [((5, 3), 8, 8), ((8, 2), 4, 8), ((9,), 4, 12), ((3,), None, 3)])
def test_pad_to_multiple_of(tokenizer, lengths, multiple, width):
    examples = [{"input_ids": list(range(10, 10 + n))} for n in lengths]
    for name in ("causal_lm", "masked_lm"):
        batch = model_foundry.create_collator(name, tokenizer, pad_to_multiple_of=multiple)(examples)
        assert batch["input_ids"].shape == (len(lengths), width)
        assert batch["attention_mask"].sum(1).tolist() == list(lengths)


def test_examples_may_be_tensors_lists_or_bare_sequences(tokenizer):
    collator = CausalLMCollator(tokenizer)
    expected = collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    for examples in (
        [{"input_ids": torch.tensor([5, 6, 7])}, {"input_ids": [8]}],
        [{"input_ids": torch.tensor([5, 6, 7])}, {"input_ids": torch.tensor([8])}],
        [[5, 6, 7], (8,)],
    ):
        batch = collator(examples)
        assert all(torch.equal(batch[key], expected[key]) for key in expected)


def masked_statistics(tokenizer, examples, batches: int, **options) -> dict[str, torch.Tensor]:
    """Run the masked-LM collator over many batches; return the originals and what it made of them."""
    collator = MaskedLMCollator(tokenizer, **options)
    padder = CausalLMCollator(tokenizer)
    width = max(len(example["input_ids"]) for example in examples)
    runs = {"original": [], "input_ids": [], "labels": [], "attention_mask": []}
    for start in range(batches):
        batch_examples = [examples[(start * 7 + i) % len(examples)] for i in range(16)]
        original = padder(batch_examples)["input_ids"]
        batch = collator(batch_examples)
        for key, tensor in (("original", original), *batch.items()):
            filler = -100 if key == "labels" else 0
            runs[key].append(torch.nn.functional.pad(tensor, (0, width - tensor.size(1)), value=filler))
    return {key: torch.cat(tensors) for key, tensors in runs.items()}


def test_masked_lm_statistics(tokenizer, examples):
    runs = masked_statistics(tokenizer, examples, batches=400, generator=0)
    original, inputs, labels = runs["original"], runs["input_ids"], runs["labels"]
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    padding = runs["attention_mask"] == 0
    selected = labels != -100

    # Special tokens (here [CLS], [SEP]) and padding are never selected, and stay as they were.
    assert special.any() and padding.any()
    assert not selected[special | padding].any()
    assert torch.equal(inputs[special | padding], original[special | padding])
    # Labels: the original token where selected, -100 everywhere else; unselected inputs unchanged.
    assert torch.equal(labels[selected], original[selected])
    assert torch.equal(inputs[~selected], original[~selected])

    ordinary = ~(special | padding)
    assert selected.sum() / ordinary.sum() == pytest.approx(0.15, abs=0.005)
    masked = selected & (inputs == tokenizer.mask_token_id)
    kept = selected & (inputs == original)
    randomized = selected & ~masked & ~kept
    share = {name: (part.sum() / selected.sum()).item() for name, part in
             (("masked", masked), ("random", randomized), ("kept", kept))}
    assert share["masked"] == pytest.approx(0.8, abs=0.01)
    assert share["random"] == pytest.approx(0.1, abs=0.01)
    assert share["kept"] == pytest.approx(0.1, abs=0.01)
    # Random replacements are ordinary tokens drawn from the whole vocabulary.
    replacements = inputs[randomized]
    assert not torch.isin(replacements, torch.tensor(tokenizer.all_special_ids)).any()
    assert replacements.unique().numel() > 0.5 * (len(tokenizer) - 5)


def test_masked_lm_probability_option(tokenizer, examples):
    runs = masked_statistics(tokenizer, examples, batches=20, mlm_probability=1.0)
    ordinary = ~torch.isin(runs["original"], torch.tensor(tokenizer.all_special_ids)) & (runs["attention_mask"] == 1)
    assert torch.equal(runs["labels"] != -100, ordinary)
    collator = model_foundry.create_collator("masked_lm", tokenizer, mlm_probability=0.5)
    assert collator.mlm_probability == 0.5


def test_masking_is_reproducible_with_a_generator(tokenizer, examples):
    def batches(generator, count=5):
        collator = MaskedLMCollator(tokenizer, generator=generator)
        return [collator(examples[i * 8:(i + 1) * 8]) for i in range(count)]

    def same(first, second) -> bool:
        return all(torch.equal(a[key], b[key]) for a, b in zip(first, second, strict=True) for key in a)

    assert same(batches(7), batches(torch.Generator().manual_seed(7)))
    assert not same(batches(7), batches(8))
    # Restoring the generator's state replays the same masks: what exact resume relies on.
    collator = MaskedLMCollator(tokenizer, generator=3)
    collator(examples[:8])
    state = collator.generator.get_state()
    first = collator(examples[8:16])
    collator.generator.set_state(state)
    assert same([first], [collator(examples[8:16])])


def test_masked_lm_needs_a_mask_token(tokenizer):
    from transformers import PreTrainedTokenizerFast

    without_mask = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token="[PAD]")
    with pytest.raises(FoundryError, match="needs a mask token.*tokenizer.special_tokens.mask_token"):
        model_foundry.create_collator("masked_lm", without_mask)
    model_foundry.create_collator("causal_lm", without_mask)
    without_pad = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, mask_token="[MASK]")
    with pytest.raises(FoundryError, match="no pad token.*tokenizer.special_tokens.pad_token"):
        model_foundry.create_collator("causal_lm", without_pad)


@pytest.mark.parametrize("options", [{"mlm_probability": 0.0}, {"mlm_probability": 1.5}, {"pad_to_multiple_of": 0}])
def test_bad_option_values_are_clear_errors(tokenizer, options):
    with pytest.raises(FoundryError, match=next(iter(options))):
        model_foundry.create_collator("masked_lm", tokenizer, **options)


def test_unknown_option_names_are_type_errors(tokenizer):
    with pytest.raises(TypeError):
        model_foundry.create_collator("causal_lm", tokenizer, mlm_probability=0.15)
