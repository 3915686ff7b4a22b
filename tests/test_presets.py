"""Presets are typed functions: every preset of every installed plugin returns its architecture's
config object, loads from a config file to exactly that object, passes the config's checks and
builds; and what a preset lays under a file's fields is what it changes from the defaults."""

from __future__ import annotations

from typing import Optional

import attrs
import pytest

import model_foundry
from model_foundry.config import load_model_config
from model_foundry.fields import option, positive
from model_foundry.presets import Presets, changed_fields, preset_config, preset_fields
from model_foundry.records import ArchitectureSchema
from model_foundry.registry import find_architecture, get_registry

BUNDLED = {"gpt2", "bert", "hybrid", "performer", "lstm", "gru", "rnn", "vae", "vq_vae", "gan", "dcgan", "ddpm",
           "diffusion", "score_diffusion", "ebm", "deep_ebm", "flow", "pixelcnn", "wavenet", "transformer",
           "point_cloud", "voxel", "mesh", "graph", "graph_rnn"}


def every_preset() -> list[tuple[str, str]]:
    registry = get_registry()
    return [(name, preset) for name in sorted(registry.architectures)
            for preset in find_architecture(name, registry).schema.presets]


def test_every_bundled_architecture_has_presets():
    names = {name for name, _ in every_preset()}
    assert BUNDLED <= names, f"no presets found for {sorted(BUNDLED - names)}"


@pytest.mark.parametrize(("architecture", "preset"), every_preset())
def test_preset_is_a_typed_config_that_loads_validates_and_builds(architecture, preset):
    schema = find_architecture(architecture, get_registry()).schema
    typed = preset_config(schema, preset)  # a misspelled field or a refused value fails here
    loaded = load_model_config({"architecture": architecture, "preset": preset})  # cross-field checks run here
    assert loaded.params == typed, "the fields a config file gets from the preset do not rebuild its object"
    model = model_foundry.create_model(loaded, device="meta")
    assert sum(p.numel() for p in model.parameters()) > 0


# --- the mechanism, on a small config class -----------------------------------------------------


@attrs.frozen
class Block:
    width: int = option(8, validator=positive)
    depth: int = option(2, validator=positive)


@attrs.frozen
class Model:
    block: Block = option(factory=Block)
    extra: Optional[Block] = option(None)
    name: str = option("plain")


def schema_with(**functions) -> ArchitectureSchema:
    presets = Presets()
    for name, function in functions.items():
        presets.register(name)(function)
    return ArchitectureSchema("model", Model, presets=presets)


def test_a_preset_lays_what_it_changes_from_the_defaults():
    assert changed_fields(Model()) == {}
    assert changed_fields(Model(block=Block(width=16), name="big")) == {"block": {"width": 16}, "name": "big"}
    # A section whose default is None is kept, even with nothing changed in it.
    assert changed_fields(Model(extra=Block())) == {"extra": {}}


def test_presets_derive_from_one_another_and_keep_their_order():
    presets = Presets()

    @presets.register("small")
    def small() -> Model:
        return Model(block=Block(width=4))

    @presets.register("large")
    def large() -> Model:
        return attrs.evolve(small(), block=attrs.evolve(small().block, depth=8))

    schema = ArchitectureSchema("model", Model, presets=presets)
    assert list(schema.presets) == ["small", "large"]
    assert preset_fields(schema, "large") == {"block": {"width": 4, "depth": 8}}


def test_a_misspelled_field_fails_when_the_preset_is_built():
    schema = schema_with(tiny=lambda: Model(block=Block(widht=4)))
    with pytest.raises(TypeError, match="widht"):
        preset_config(schema, "tiny")


def test_a_preset_of_another_class_is_named():
    schema = schema_with(tiny=lambda: Block())
    with pytest.raises(TypeError, match="preset 'tiny' of model returned a Block, not a Model"):
        preset_fields(schema, "tiny")


def test_a_name_registered_twice_or_a_preset_that_is_not_a_function_is_refused():
    presets = Presets()
    presets.register("tiny")(Model)
    with pytest.raises(ValueError, match="registered twice"):
        presets.register("tiny")(Model)
    with pytest.raises(TypeError, match="callable"):
        ArchitectureSchema("model", Model, presets={"tiny": {"name": "plain data"}})
