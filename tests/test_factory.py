"""The Python API: create_model from a typed config object, a name or a file; modality adaptation;
register_plugin at run time."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest
import torch
from gaussian_toy_plugin import PLUGIN, GaussianToyConfig, GaussianToyPlugin
from toy_plugin import PLUGIN as TOY_PLUGIN
from toy_plugin import Block, ToyConfig

import model_foundry
from model_foundry import load
from model_foundry.config import load_config
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder
from model_foundry.registry import get_registry


@pytest.fixture
def registry(foundry_registry):
    return foundry_registry(PLUGIN, TOY_PLUGIN)


# --- typed config objects ----------------------------------------------------------------------


def test_a_typed_config_object_names_its_architecture(registry):
    model = model_foundry.create_model(GaussianToyConfig(shape=[1, 3, 3]))
    assert model.architecture == "gaussian_toy" and model.loc.numel() == 9
    toy = model_foundry.create_model(ToyConfig(block=Block(layers=1, hidden_size=8, heads=2), vocab_size=11))
    assert toy.architecture == "toy" and toy.embed.num_embeddings == 11


def test_a_typed_config_object_is_checked_like_a_file(registry):
    with pytest.raises(ConfigError, match=r"model\.shape: sizes must be > 0"):
        model_foundry.create_model(GaussianToyConfig(shape=[0, 2]))
    with attrs.validators.disabled():
        negative = GaussianToyConfig(init_scale=-1.0)
    with pytest.raises(ConfigError, match=r"model\.init_scale: must be > 0"):
        model_foundry.create_model(negative)
    with pytest.raises(ConfigError, match=r"model\.block\.hidden_size: must be divisible"):
        model_foundry.create_model(ToyConfig(block=Block(layers=1, hidden_size=10, heads=4)))


def test_an_unknown_config_class_is_a_type_error_naming_the_installed_ones(registry):
    @attrs.frozen
    class UnknownConfig:
        width: int = 3

    with pytest.raises(TypeError, match=r"UnknownConfig.*GaussianToyConfig \(gaussian_toy\).*ToyConfig \(toy\)"):
        model_foundry.create_model(UnknownConfig())
    with pytest.raises(TypeError, match="no installed architecture's config class"):
        model_foundry.create_model(3.5)


def test_an_architecture_name_with_a_preset_and_overrides(registry):
    model = model_foundry.create_model("gaussian_toy", preset="tiny", init_scale=2.0)
    assert model.loc.numel() == 4 and torch.equal(torch.diag(model.scale_tril), torch.full((4,), 2.0))
    with pytest.raises(ConfigError, match="model.init_scale"):
        model_foundry.create_model("gaussian_toy", init_scale=-2.0)
    with pytest.raises(TypeError, match="only with an architecture name"):
        model_foundry.create_model(GaussianToyConfig(), preset="tiny")


def test_an_architecture_name_that_is_not_installed_is_an_unknown_architecture(registry, tmp_path, monkeypatch):
    for call in (lambda: model_foundry.create_model("gaussian_tiy"), lambda: model_foundry.create_model("gpt2", preset="tiny")):
        with pytest.raises(ConfigError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith("unknown architecture") and "installed: gaussian_toy, toy" in message
    assert "did you mean 'gaussian_toy'" in str(pytest.raises(ConfigError, model_foundry.create_model, "gaussian_tiy").value)
    # paths stay paths: a missing file is a missing file, and a file wins over a name
    for path in ("configs/gpt2.yaml", "gpt2.yml", "./gpt2"):
        with pytest.raises(ConfigError, match="config file not found"):
            model_foundry.create_model(path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").write_text("model:\n  architecture: gaussian_toy\n  shape: [1, 2]\n")
    assert model_foundry.create_model("toy").architecture == "gaussian_toy"


# --- modalities --------------------------------------------------------------------------------


def test_create_model_adapts_an_architecture_to_another_modality(registry):
    native = model_foundry.create_model(GaussianToyConfig())
    assert native.config.modality == "image" and native.input_key == "pixel_values"
    assert native.sample(3).shape == (3, 1, 2, 2)
    vector = model_foundry.create_model(GaussianToyConfig(), modality="vector")
    assert vector.config.modality == "vector" and vector.input_key == "vectors"
    assert vector.sample(3).shape == (3, 4)
    assert torch.isfinite(vector(vectors=torch.zeros(2, 4)).loss)


def test_an_adapted_model_is_saved_and_loaded_for_its_modality(registry, tmp_path):
    vector = model_foundry.create_model(GaussianToyConfig(), modality="vector")
    vector.save_pretrained(tmp_path / "saved")
    again = load(tmp_path / "saved")
    assert again.config.modality == "vector" and again.input_key == "vectors"


def test_an_unsupported_modality_lists_the_supported_ones(registry):
    with pytest.raises(FoundryError, match="gaussian_toy cannot be adapted to 'audio' data; it models image, vector"):
        model_foundry.create_model(GaussianToyConfig(), modality="audio")
    with pytest.raises(FoundryError, match="did you mean 'image'"):
        model_foundry.create_model(GaussianToyConfig(), modality="imag")
    with pytest.raises(FoundryError, match="toy cannot be adapted to 'image' data; it models text"):
        model_foundry.create_model(ToyConfig(block=Block(layers=1, hidden_size=8, heads=2)), modality="image")


def test_a_config_with_data_builds_for_the_data_modality(registry, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  architecture: gaussian_toy\n  shape: [2]\ndata:\n  kind: toy\n  num_samples: 100\n")
    model = model_foundry.create_model(load_config(path))
    assert model.config.modality == "vector" and model.input_key == "vectors"
    path.write_text("model:\n  architecture: gaussian_toy\n  shape: [2]\n  modality: image\ndata:\n  kind: toy\n")
    with pytest.raises(ConfigError, match="model.modality: the model is set to image data, and the data section holds vector"):
        model_foundry.create_model(load_config(path))


def test_several_modalities_without_a_modality_field_is_a_plugin_bug(foundry_registry):
    class Careless:
        @hookimpl
        def foundry_config_schemas(self):
            return [ArchitectureSchema("careless", ToyConfig, capabilities=Capabilities(modalities=("text", "image")))]

        @hookimpl
        def foundry_model_builders(self):
            return [ModelBuilder("careless", "toy_plugin:build")]

    foundry_registry(Careless())
    with pytest.raises(FoundryError, match="has no 'modality' field.*a bug in that plugin"):
        model_foundry.create_model({"architecture": "careless", "block": {"layers": 1}})


# --- register_plugin ---------------------------------------------------------------------------


def test_register_plugin_adds_a_plugin_object_at_run_time(foundry_registry):
    registry = foundry_registry()
    assert "gaussian_toy" not in registry.architectures
    info = model_foundry.register_plugin(GaussianToyPlugin(), name="notebook")
    assert info.distribution == "notebook" and info in get_registry().plugins
    assert model_foundry.create_model(GaussianToyConfig()).architecture == "gaussian_toy"
    with pytest.raises(FoundryError, match="'notebook' is already registered"):
        model_foundry.register_plugin(GaussianToyPlugin(), name="notebook")
    model_foundry.unregister_plugin("notebook")
    assert "gaussian_toy" not in registry.architectures and info not in registry.plugins
    with pytest.raises(FoundryError, match="no plugin called 'notebook'"):
        model_foundry.unregister_plugin("notebook")


def test_a_runtime_plugin_follows_the_conflict_rules(foundry_registry):
    registry = foundry_registry(PLUGIN)
    model_foundry.register_plugin(GaussianToyPlugin(), name="my-notebook")
    assert registry.conflicts()["architecture gaussian_toy"] == ["test-plugin-0", "my-notebook"]
    with pytest.raises(ConfigError, match="provided by several distributions: test-plugin-0, my-notebook"):
        model_foundry.create_model(GaussianToyConfig())
    model_foundry.unregister_plugin("my-notebook")
    assert registry.conflicts() == {}
    assert model_foundry.create_model(GaussianToyConfig()).architecture == "gaussian_toy"


def test_a_runtime_plugin_whose_hook_raises_is_refused_whole(foundry_registry):
    class Broken(GaussianToyPlugin):
        @hookimpl
        def foundry_model_builders(self):
            raise RuntimeError("no builder today")

    registry = foundry_registry()
    with pytest.raises(FoundryError, match="foundry_model_builders failed: RuntimeError: no builder today"):
        model_foundry.register_plugin(Broken())
    assert "gaussian_toy" not in registry.architectures
    assert not [info for info in registry.plugins if info.name == "Broken"]


def test_the_python_api_is_exported_without_importing_torch():
    code = (
        "import sys, model_foundry\n"
        "assert callable(model_foundry.register_plugin) and callable(model_foundry.unregister_plugin)\n"
        "assert 'torch' not in sys.modules\n"
        "assert callable(model_foundry.create_model_with_extensions)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_batch_examples_takes_the_given_key_and_checks_the_shape():
    import torch

    from model_foundry.errors import FoundryError
    from model_foundry.protocol import batch_examples

    class Model:
        architecture = "toy"

    images = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    found = batch_examples(Model(), (1, 8, 8), pixel_values=images, vectors=None)
    assert found.dtype == torch.float32 and found.shape == (2, 1, 8, 8)
    converted = torch.nn.Linear(1, 1).double()  # a model in float64 gets its examples in float64
    converted.architecture = "toy"
    assert batch_examples(converted, (1, 8, 8), pixel_values=images.float()).dtype == torch.float64
    with pytest.raises(FoundryError, match=r"toy needs a batch with 'pixel_values' or 'vectors'$"):
        batch_examples(Model(), (1, 8, 8), pixel_values=None, vectors=None)
    with pytest.raises(FoundryError, match=r"built for examples of shape \[1, 8, 8\] \(model.input_shape\).*\[2\]; set model.input_shape to \[2\]"):
        batch_examples(Model(), (1, 8, 8), vectors=torch.zeros(3, 2))
