"""Loading a checkpoint without initialising the model first: parameters are built on the meta device
and the saved tensors take their place. What is loaded must be exactly what was saved: weights,
tied weights, buffers (persistent or not) and the outputs they give."""

from __future__ import annotations

import json
import struct

import attrs
import pytest
import torch

import model_foundry
from model_foundry.checkpoint import ALIGNMENT, load, save
from model_foundry.fields import option
from model_foundry.limits import bounded_build
from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder


@attrs.frozen
class MixedConfig:
    """A model with every kind of state: tied weights, a GRU, buffers of several dtypes."""

    width: int = option(6, doc="width")
    odd: int = option(3, doc="size of a tensor whose bytes are no multiple of the alignment")
    buffer_from_parameter: bool = option(False, doc="compute a non-persistent buffer from a weight at build time")


def build_mixed(config):
    from model_foundry.protocol import FoundryModel, ModelOutput

    class Mixed(FoundryModel):
        def __init__(self, config):
            super().__init__(config)
            self.embed = torch.nn.Embedding(11, config.width)
            self.rnn = torch.nn.GRU(config.width, config.width, batch_first=True)
            self.head = torch.nn.Linear(config.width, 11, bias=False)
            self.head.weight = self.embed.weight  # tied
            self.odd = torch.nn.Parameter(torch.randn(config.odd))
            self.register_buffer("steps", torch.arange(8, dtype=torch.int64))  # 64 bytes
            self.register_buffer("mask", torch.tensor([True, False, True]))
            self.register_buffer("frequencies", torch.arange(config.width) * 0.5, persistent=False)
            if config.buffer_from_parameter:  # computed from a weight's (fixed) initial value
                self.gain = torch.nn.Parameter(torch.ones(11))
                self.register_buffer("row_norms", self.gain.detach() * 2, persistent=False)

        def forward(self, input_ids, **_):
            hidden, _ = self.rnn(self.embed(input_ids) + self.frequencies)
            logits = self.head(hidden) + self.odd.sum()
            if hasattr(self, "row_norms"):
                logits = logits * self.row_norms
            return ModelOutput(loss=logits.square().mean(), logits=logits)

    return Mixed(config)


class MixedPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        return [ArchitectureSchema("mixed_state", MixedConfig, family="test", description="every kind of state",
                                   capabilities=Capabilities(modality="vector"))]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("mixed_state", build_mixed)]


@pytest.fixture(scope="module")
def mixed():
    model_foundry.register_plugin(MixedPlugin(), name="mixed-state-test")
    yield
    model_foundry.unregister_plugin("mixed-state-test")


def _saved_and_loaded(tmp_path, **fields):
    from model_foundry.config import load_model_config

    torch.manual_seed(0)
    model = model_foundry.create_model(load_model_config({"architecture": "mixed_state", **fields})).eval()
    save(model, tmp_path / "checkpoint")
    return model, load(tmp_path / "checkpoint")


def _data_start(path) -> int:
    with open(path, "rb") as handle:
        return 8 + struct.unpack("<Q", handle.read(8))[0]


@pytest.mark.parametrize("buffer_from_parameter", [False, True])
def test_loaded_state_is_exactly_the_saved_one(mixed, tmp_path, buffer_from_parameter):
    model, loaded = _saved_and_loaded(tmp_path, buffer_from_parameter=buffer_from_parameter)
    saved = model.state_dict()
    assert loaded.state_dict().keys() == saved.keys()
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == saved[name].dtype and torch.equal(tensor, saved[name]), name
    # Buffers that are not saved are the ones the builder computes, whatever the device of the parameters.
    assert torch.equal(loaded.frequencies, model.frequencies)
    if buffer_from_parameter:
        assert torch.equal(loaded.row_norms, model.row_norms)
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    # Tied weights stay one parameter, so an optimizer updates them once.
    assert loaded.head.weight is loaded.embed.weight
    assert len(list(loaded.parameters())) == len(list(model.parameters()))
    assert all(parameter.requires_grad for parameter in loaded.parameters())
    ids = torch.tensor([[1, 2, 3, 10]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_loaded_model_trains_like_the_saved_one(mixed, tmp_path):
    model, loaded = _saved_and_loaded(tmp_path)
    model.train(), loaded.train()
    ids = torch.tensor([[4, 5, 6]])
    for each in (model, loaded):
        optimizer = torch.optim.SGD(each.parameters(), lr=0.1)
        each(ids).loss.backward()
        optimizer.step()
    assert loaded.head.weight is loaded.embed.weight
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_saved_tensors_start_aligned(mixed, tmp_path):
    """The header is padded so that the data starts at a multiple of ALIGNMENT bytes: tensors of whole
    multiples then lie aligned in the memory map and are used in place (the others are copied)."""
    from safetensors import safe_open

    for odd in (1, 3, 16):
        model, _ = _saved_and_loaded(tmp_path / str(odd), width=16, odd=odd)
        path = tmp_path / str(odd) / "checkpoint" / "model.safetensors"
        assert _data_start(path) % ALIGNMENT == 0
        with safe_open(str(path), framework="pt") as handle:
            # Tensors by element size, then name: the int64 buffer (64 bytes), then float32 embed, odd, rnn...
            aligned = {name: handle.get_tensor(name).data_ptr() % ALIGNMENT == 0 for name in handle.keys()}
        assert aligned["embed.weight"] and aligned["steps"]
        assert aligned["rnn.weight_hh_l0"] is (odd * 4 % ALIGNMENT == 0)


def test_a_file_without_padding_loads_exactly(mixed, tmp_path):
    """A misaligned file (written by another tool) is read through copies, with the same outputs."""
    from safetensors.torch import save_file

    model, _ = _saved_and_loaded(tmp_path, width=16)
    path = tmp_path / "checkpoint" / "model.safetensors"
    state = {name: tensor for name, tensor in model.state_dict().items() if name != "head.weight"}
    save_file(state, str(path), metadata={"format": "pt", "head.weight": "embed.weight", "x": "y" * 5})
    assert _data_start(path) % ALIGNMENT != 0
    loaded = load(tmp_path / "checkpoint")
    assert loaded.head.weight is loaded.embed.weight
    ids = torch.arange(11).view(1, 11)
    assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_gpt2_load_keeps_tied_head_and_outputs(tmp_path):
    from model_foundry.config import load_model_config

    torch.manual_seed(0)
    model = model_foundry.create_model(load_model_config({"architecture": "gpt2", "preset": "tiny"})).eval()
    save(model, tmp_path / "gpt2")
    loaded = load(tmp_path / "gpt2")
    head, embedding = loaded.hf_model.lm_head.weight, loaded.hf_model.transformer.wte.weight
    assert head is embedding
    meta = json.loads((tmp_path / "gpt2" / "foundry.json").read_text())
    assert meta["num_parameters"] == sum(p.numel() for p in loaded.parameters())
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_initialisers_are_skipped_on_meta_tensors_only():
    with bounded_build(None, "test", parameters_on_meta=True):
        layer = torch.nn.Linear(3, 4)
        real = torch.zeros(5)
        torch.nn.init.normal_(real)
        real.uniform_()
        shared = torch.nn.Parameter(torch.zeros(2))
        first, second = torch.nn.Module(), torch.nn.Module()
        first.weight, second.weight = shared, shared
    assert layer.weight.is_meta and layer.bias.is_meta
    assert not real.is_meta and real.abs().sum() > 0  # initialisers still run on real tensors
    assert first.weight is second.weight and first.weight.is_meta  # one parameter registered twice: one replacement


def test_spectral_norm_is_set_up_on_meta_without_running_its_power_iteration():
    with bounded_build(None, "test", parameters_on_meta=True):
        layer = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Linear(3, 4))
        real = torch.tensor([3.0, 4.0])
        normalized = torch.nn.functional.normalize(real, dim=0)
        halves = torch.ones(2, 3, device="meta") / torch.ones(3, device="meta")
        matrix, vector = torch.ones(4, 3, device="meta"), torch.ones(3, device="meta")
        shapes = [torch.mv(matrix, vector).shape, torch.vdot(vector, vector).shape,
                  torch.nn.functional.normalize(matrix, dim=0).shape]
    spectral = layer.parametrizations.weight[0]
    assert spectral._u.shape == (4,) and spectral._v.shape == (3,) and layer.weight.shape == (4, 3)
    assert layer.weight.is_meta and spectral._u.is_meta
    assert torch.allclose(normalized, torch.tensor([0.6, 0.8]))  # real tensors are still computed
    assert halves.is_meta and halves.shape == (2, 3)  # division broadcasts on meta as it does elsewhere
    assert shapes == [(4,), (), (4, 3)]


LOAD_SPECTRAL = """
import json, sys, torch, model_foundry
model = model_foundry.load(sys.argv[1]).eval()
x = torch.linspace(-2, 2, 8).reshape(4, 2)
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "energy": model.energy(x).tolist(),
                  "state": {k: v.tolist() for k, v in model.state_dict().items() if k != "replay_buffer"}}))
"""


def test_a_spectrally_normalized_model_loads_exactly_and_without_torch_decompositions(tmp_path):
    """Loading a deep_ebm (spectral norm on every layer) builds it on meta without torch's Python
    decompositions, which import torch._dynamo and took ~4 CPU s; what loads is what was saved."""
    import subprocess
    import sys

    torch.manual_seed(0)
    model = model_foundry.create_model("deep_ebm", preset="tiny")
    model.train()
    model.energy(torch.randn(16, 2))  # training-mode forwards move the power iteration's u and v
    model.eval()
    save(model, tmp_path / "checkpoint")
    done = subprocess.run([sys.executable, "-c", LOAD_SPECTRAL, str(tmp_path / "checkpoint")], capture_output=True,
                          text=True, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["dynamo"] is False
    x = torch.linspace(-2, 2, 8).reshape(4, 2)
    assert loaded["energy"] == model.energy(x).tolist()
    assert loaded["state"] == {k: v.tolist() for k, v in model.state_dict().items() if k != "replay_buffer"}


@attrs.frozen
class OtherMixedConfig(MixedConfig):
    """The same architecture name from another distribution."""


class OtherMixedPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        return [ArchitectureSchema("mixed_state", OtherMixedConfig, family="test", description="a namesake",
                                   capabilities=Capabilities(modality="vector"))]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("mixed_state", build_mixed)]


def test_a_name_in_conflict_loads_with_the_distribution_it_was_saved_with(mixed, tmp_path):
    from model_foundry.config import load_model_config
    from model_foundry.errors import FoundryError, FoundryWarning
    from model_foundry.registry import get_registry

    model, _ = _saved_and_loaded(tmp_path)  # saved while mixed-state-test alone provides it
    model_foundry.register_plugin(OtherMixedPlugin(), name="other-mixed")
    try:
        with pytest.warns(FoundryWarning, match="saved with mixed-state-test, which is used"):
            loaded = load(tmp_path / "checkpoint")
        assert type(loaded.config.params) is MixedConfig
        # The namesake's own checkpoint records it and loads with it.
        registry = get_registry().preferring("mixed_state", "other-mixed")
        other = model_foundry.create_model(load_model_config({"architecture": "mixed_state"}, registry), registry=registry)
        save(other, tmp_path / "other")
        assert json.loads((tmp_path / "other" / "foundry.json").read_text())["distribution"] == "other-mixed"
        with pytest.warns(FoundryWarning, match="saved with other-mixed"):
            assert type(load(tmp_path / "other").config.params) is OtherMixedConfig
        # A checkpoint that records neither says that the name is in conflict, not that nothing provides it.
        meta = json.loads((tmp_path / "other" / "foundry.json").read_text())
        (tmp_path / "other" / "foundry.json").write_text(json.dumps({**meta, "distribution": "gone"}))
        with pytest.raises(FoundryError, match="several distributions"):
            load(tmp_path / "other")
    finally:
        model_foundry.unregister_plugin("other-mixed")
