"""The shared language-model pieces: outputs, sampling, vocabulary checks in builders."""

from __future__ import annotations

import pytest
import torch

from model_foundry import FoundryError, create_model
from model_foundry.modeling import ModelOutput, sample_next_token


@pytest.mark.parametrize("architecture", ["gpt2", "bert", "hybrid", "lstm"])
def test_builders_ask_for_a_vocabulary(architecture):
    with pytest.raises(FoundryError, match="set model.vocab_size, or give the config a tokenizer section"):
        create_model({"architecture": architecture, "preset": "tiny"})


def test_model_output_reads_as_attributes_and_keys():
    out = ModelOutput(loss=torch.tensor(1.0), logits=torch.zeros(1))
    assert out.loss is out["loss"] and out.hidden_states is None and "hidden_states" not in out
    assert ModelOutput({"logits": 1}).logits == 1
    with pytest.raises(AttributeError):
        _ = out.not_a_field


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 5.0, 2.0]])
    assert sample_next_token(logits).item() == 2
    generator = torch.Generator().manual_seed(0)
    picks = {sample_next_token(logits, do_sample=True, top_k=2, generator=generator).item() for _ in range(50)}
    assert picks <= {2, 3}
    picks = {sample_next_token(logits, do_sample=True, top_p=0.5, generator=generator).item() for _ in range(50)}
    assert picks == {2}
    with pytest.raises(FoundryError, match="temperature"):
        sample_next_token(logits, do_sample=True, temperature=0)
