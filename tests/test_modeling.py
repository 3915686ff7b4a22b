"""The shared language-model pieces: outputs, sampling, vocabulary checks in builders."""

from __future__ import annotations

import pytest
import torch

import model_foundry
from model_foundry import FoundryError, create_model
from model_foundry.text.config import TokenizerConfig
from model_foundry.text.modeling import ModelOutput, sample_next_token, sdpa_attention_mask


@pytest.mark.parametrize("architecture", ["gpt2", "bert", "hybrid", "lstm"])
def test_token_models_without_a_vocabulary_take_the_default_tokenizer_size(architecture, tmp_path):
    model = create_model({"architecture": architecture, "preset": "tiny"})
    default = TokenizerConfig().vocab_size
    assert model.config.vocab_size == default  # recorded, so that a saved model reloads the same
    assert model.get_input_embeddings().weight.shape[0] == default
    model_foundry.save(model, tmp_path / "m")
    assert model_foundry.load(tmp_path / "m").config.vocab_size == default


def test_a_tokenizer_section_gives_the_vocabulary_size(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {architecture: gpt2, preset: tiny}\ntokenizer: {vocab_size: 500}\n", encoding="utf-8")
    assert create_model(str(path)).config.vocab_size == 500


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


def test_every_query_keeps_a_visible_key_under_left_padding():
    # Older torch versions and some GPU kernels return NaN for a row with nothing visible.
    padding = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    for causal in (True, False):
        visible, is_causal = sdpa_attention_mask(padding, 4, 4, causal, torch.device("cpu"))
        assert not is_causal
        assert visible.any(dim=-1).all()
        assert not visible[0, 0, 2:, :2].any()  # real tokens never see padding
    causal_mask, _ = sdpa_attention_mask(None, 2, 5, True, torch.device("cpu"))  # two new queries after 3 cached
    assert causal_mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert sdpa_attention_mask(None, 4, 4, True, torch.device("cpu")) == (None, True)


def test_load_returns_converted_models_in_eval_mode_on_any_device(tmp_path):
    from toy_plugin import ToyPlugin

    from model_foundry.plugin import hookimpl
    from model_foundry.records import CheckpointConverter
    from model_foundry.testing import isolated_registry

    def convert(directory):
        return create_model({"architecture": "toy", "preset": "tiny", "vocab_size": 8}).train()

    class Importer:
        @hookimpl
        def foundry_checkpoint_converters(self):
            return [CheckpointConverter("toy-dir", "toy", lambda d: True, convert)]

    with isolated_registry(ToyPlugin(), Importer()):
        assert not model_foundry.load(tmp_path).training
        assert not model_foundry.load(tmp_path, device="cpu").training


def test_weights_write_tied_entries_once_and_copy_packed_views(tmp_path):
    """Tied weights are one entry plus an alias (as safetensors' save_model writes them); weights that
    are views of one packed buffer -- what cuDNN makes of an RNN's weights on a GPU -- are written too,
    where save_model refuses them. Loading restores both."""
    from safetensors.torch import load_file, load_model, safe_open

    from model_foundry.checkpoint import _write_weights

    class Weights(torch.nn.Module):
        def __init__(self, a: torch.Tensor, b: torch.Tensor):
            super().__init__()
            self.a, self.b = torch.nn.Parameter(a), torch.nn.Parameter(b)
            self.embed = torch.nn.Embedding(3, 2)
            self.head = torch.nn.Linear(2, 3, bias=False)
            self.head.weight = self.embed.weight

    flat = torch.arange(10.0)
    model = Weights(flat[:4], flat[4:])  # views of one storage
    assert model.a.untyped_storage().data_ptr() == model.b.untyped_storage().data_ptr()
    path = str(tmp_path / "model.safetensors")
    _write_weights(model, path)
    written = load_file(path)
    assert sorted(written) == ["a", "b", "embed.weight"]
    with safe_open(path, "pt") as handle:
        assert handle.metadata()["head.weight"] == "embed.weight"
    fresh = Weights(torch.zeros(4), torch.zeros(6))  # as a model is built before loading: weights of its own
    torch.nn.init.zeros_(fresh.embed.weight)
    missing, unexpected = load_model(fresh, path, strict=False)
    assert not missing and not unexpected
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert fresh.head.weight is fresh.embed.weight
