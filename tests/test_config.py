"""Config files: every class of user error is reported with file, line, column and key path."""

from __future__ import annotations

import textwrap

import pytest
from toy_plugin import ToyPlugin

from model_foundry import ConfigError, load_config
from model_foundry.config import FoundryConfig, architecture_schema, config_schema
from model_foundry.errors import Location
from model_foundry.testing import isolated_registry


@pytest.fixture(autouse=True)
def registry():
    with isolated_registry(ToyPlugin()) as reg:
        yield reg


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def problems(path, overrides=(), **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, **kw)
    return [str(p) for p in info.value.problems]


GOOD = """
model:
  architecture: toy
  preset: tiny
  block:
    hidden_size: 32
training:
  max_steps: 10
  warmup_steps: 2
"""


def test_good_config_with_preset_and_override(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.model.architecture == "toy"
    assert config.model.block.layers == 1  # from the preset
    assert config.model.block.hidden_size == 32  # the file wins over the preset
    assert config.training.max_steps == 10
    assert config.tokenizer is None and config.data is None


def test_overrides_are_typed_and_win(tmp_path):
    config = load_config(write(tmp_path, GOOD), ["model.block.layers=3", "training.learning_rate=1e-3"])
    assert config.model.block.layers == 3
    assert config.training.learning_rate == pytest.approx(1e-3)


# Nine levels of ten aliases each would be 10**9 values: refused after the first few levels.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model:\n  architecture: toy\n  preset: tiny\n  blok: {}\n", ":4:3: model.blok: unknown key 'blok'; did you mean 'block'?"),
        ("modle:\n  architecture: toy\n", ":1:1: modle: unknown section 'modle'; did you mean 'model'?"),
        ("model:\n  architecture: toi\n", ":2:17: model.architecture: unknown architecture 'toi'; did you mean 'toy'?"),
        ("model:\n  architecture: toy\n  preset: tinny\n", ":3:11: model.preset: unknown preset 'tinny' for toy; did you mean 'tiny'?"),
        ("model:\n  architecture: toy\n  preset: tiny\n  block:\n    activation: gelu_new\n",
         ":5:17: model.block.activation: 'gelu_new' is not one of: gelu, relu; did you mean 'gelu'?"),
        ("model:\n  architecture: toy\n  preset: tiny\n  block:\n    layers: two\n",
         ":5:13: model.block.layers: expected an integer, got str 'two'"),
        ("model:\n  architecture: toy\n  preset: tiny\n  block:\n    layers: 2.5\n",
         ":5:13: model.block.layers: expected an integer, got float 2.5"),
        ("training:\n  report_to: tensorboard\n", ":2:14: training.report_to: expected a list, got str 'tensorboard'; write [a, b]"),
        ("model:\n  architecture: toy\n  block:\n    hidden_size: 8\n", ":3:3: model.block: missing required key 'layers'"),
        ("model:\n  architecture: toy\n  preset: tiny\n  block:\n    hidden_size: 30\n",
         ":5:18: model.block.hidden_size: must be divisible by block.heads (4)"),
        ("model:\n  architecture: toy\n  preset: tiny\n  block:\n    dropout: 1.5\n",
         ":5:14: model.block.dropout: must be in [0, 1), got 1.5"),
        ("training:\n  objective: causal_llm\n", ":2:14: training.objective: unknown objective 'causal_llm'; did you mean 'causal_lm'?"),
        ("model:\n  architecture: toy\n  preset: tiny\n  bidirectional: true\ntraining:\n  objective: causal_lm\n",
         ":6:14: training.objective: toy cannot train 'causal_lm' with these settings, only masked_lm"),
        ("tokenizer:\n  tokenizer_type: wordpeice\n", ":2:19: tokenizer.tokenizer_type: unknown tokenizer type 'wordpeice'; did you mean 'wordpiece'?"),
        ("training:\n  seed: -1\n", ":2:9: training.seed: must be between 0 and 4294967295, got -1"),
        ("model:\n  architecture: !!python/object/apply:os.system [echo pwned]\n",
         ":2:17: YAML tag '!!python/object/apply:os.system' is not allowed (nothing in a config is ever executed)"),
        ("training:\n  report_to: [!!python/name:os.system x]\n", ":2:15: YAML tag '!!python/name:os.system' is not allowed"),
        ("training:\n  seed: !!binary aGk=\n", ":2:9: YAML tag '!!binary' is not allowed"),
        ("training:\n  seed: " + "9" * 5000 + "\n", ":2:9: an integer of 5,000 digits; integers in a config have at most 4300"),
        ("training: " + "[" * 100_000 + "\n", ":1:111: more than 100 nested [ or {"),
        ("training:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 120)), ": more than 100 nested levels"),
        (LAUGHS, ":5:44: this file expands to more than 100,000 values once its aliases (*name) are expanded"),
        ("model:\n  architecture: toy\n  preset: tiny\nmodel:\n  architecture: toy\n", ":4:1: duplicate key 'model'"),
        ("training: {seed: 1, 'seed': 2}\n", ":1:21: duplicate key 'seed'; each key may appear once in a mapping"),
        ("model:\n\tarchitecture: toy\n", ":2:1: tab character in indentation"),
        ("model: [unclosed\n", ":2:1: invalid YAML"),
        ("", ":1:1: the file is empty"),
        ("model:\n  architecture: toy\n  preset: [tiny]\n", ":3:11: model.preset: expected a preset name, got ['tiny']"),
        ("model:\n  architecture: [toy]\n", ":2:17: model.architecture: expected an architecture name"),
        ("model:\n", ":1:1: model: expected a mapping with 'architecture'"),
        ("base: &b {layers: x}\n", ":1:1: base: unknown section 'base'"),
        ("- model\n- data\n", ":1:1: the top level must be a mapping"),
    ],
)
def test_error_is_located(tmp_path, text, expected):
    path = write(tmp_path, text)
    found = problems(path)
    assert any(p.startswith(path) and expected in p for p in found), found


def test_all_problems_reported_at_once(tmp_path):
    path = write(tmp_path, """
        model:
          architecture: toy
          preset: tiny
          block:
            layrs: 2
            dropout: 2.0
        training:
          max_stepz: 3
        """)
    found = problems(path)
    assert len(found) == 3, found


def test_checks_of_every_kind_are_reported_in_one_pass_in_file_order(tmp_path):
    """An unknown key, an out-of-range value, a cross-field check of the same block (validate()) and a
    check across sections (the objective) used to come one pass at a time."""
    path = write(tmp_path, """
        training:
          objective: masked_lm
          max_steps: 0
        model:
          architecture: toy
          preset: tiny
          nonsense: 1
          block:
            hidden_size: 30
            heads: 4
            dropout: 2.0
        """)
    found = problems(path)
    assert [problem.split(": ")[1] for problem in found] == [
        "training.objective", "training.max_steps", "model.nonsense", "model.block.hidden_size", "model.block.dropout",
    ], found
    assert "divisible" in found[3] and "cannot train 'masked_lm'" in found[0]


def test_a_cross_field_check_that_fails_on_an_already_reported_value_adds_nothing(tmp_path):
    path = write(tmp_path, """
        model:
          architecture: toy
          preset: tiny
          block:
            heads: 0
        """)
    assert problems(path) == [f"{path}:5:12: model.block.heads: must be > 0, got 0"]


@pytest.mark.parametrize("sections", [None, ("model",)])
def test_model_keys_without_their_section_are_one_problem(tmp_path, sections):
    path = write(tmp_path, "architecture: toy\npreset: tiny\nblock:\n  layers: 2\ntraining:\n  max_stepz: 3\n")
    found = problems(path) if sections is None else problems(path, sections=sections)
    assert any(p.startswith(f"{path}:1:1: architecture: a model key at the top level") and "under a line 'model:'" in p
               for p in found), found
    assert not any("unknown section" in p or "no 'model' section" in p for p in found), found
    assert any("max_stepz" in p for p in found) == (sections is None), found


def test_warmup_longer_than_the_run_is_allowed(tmp_path):
    # Shortening a run with --set training.max_steps just works: warmup never completes, as in transformers.
    config = load_config(write(tmp_path, GOOD), ["training.max_steps=5", "training.warmup_steps=10"])
    assert (config.training.max_steps, config.training.warmup_steps) == (5, 10)


def test_aliases_within_the_bound_still_expand(tmp_path):
    path = write(tmp_path, "training:\n  report_to: &trackers [tensorboard]\nextensions: {}\n")
    assert load_config(path, sections=("training",)).training.report_to == ["tensorboard"]


def test_missing_file_and_directory(tmp_path):
    assert "config file not found" in problems(str(tmp_path / "nope.yaml"))[0]
    assert "is a directory" in problems(str(tmp_path))[0]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.block.layers=three", "--set model.block.layers=three:1:20: model.block.layers: expected an integer"),
        ("model.blok.layers=3", "model.blok: unknown key 'blok'; did you mean 'block'?"),
        ("training.objective=masked_llm", "did you mean 'masked_lm'?"),
        ("nokey", "expected --set dotted.key=value"),
        ("model.preset.x=1", "cannot set a key inside model.preset"),
        ("training.seed=!!python/object/apply:os.system [x]", "--set training.seed=!!python/object/apply:os.system [x]:1:1: "
         "YAML tag '!!python/object/apply:os.system' is not allowed"),
        ("training.seed=" + "1" * 4400, "an integer of 4,400 digits"),
    ],
)
def test_override_errors(tmp_path, override, expected):
    found = problems(write(tmp_path, GOOD), [override])
    assert any(expected in p for p in found), found


def test_sections_parse_alone(tmp_path):
    path = write(tmp_path, GOOD + "datasets:\n  - name: librispeech\n")
    assert load_config(path, sections=("model",)).training is None
    assert "unknown section 'datasets'" in problems(path)[0]
    assert "no 'data' section" in problems(path, sections=("data",))[0]


def test_global_defaults_fill_unset_fields(tmp_path):
    path = write(tmp_path, """
        model:
          architecture: twopart
          global_config:
            dropout: 0.2
            device: cuda
          encoder:
            width: 4
          decoder:
            dropout: 0.3
        """)
    model = load_config(path).model
    assert model.encoder.dropout == 0.2 and model.encoder.device == "cuda"
    assert model.decoder.dropout == 0.3 and model.decoder.device == "cuda"


def test_global_defaults_errors_are_located(tmp_path):
    path = write(tmp_path, """
        model:
          architecture: twopart
          global_config:
            dropuot: 0.2
            dropout: 1.2
          encoder: {}
        """)
    found = problems(path)
    assert any(":4:5: model.global_config.dropuot: unknown key 'dropuot'; did you mean 'dropout'?" in p for p in found), found
    # A bad shared value is reported where it is written, not on the block that inherits it.
    assert any(":5:14: model.encoder.dropout: must be in [0, 1)" in p for p in found), found


def test_json_schema_export():
    jsonschema = pytest.importorskip("jsonschema")
    schema = architecture_schema("toy")
    assert schema["properties"]["preset"]["enum"] == ["tiny", "small"]
    assert schema["properties"]["block"]["properties"]["activation"]["enum"] == ["gelu", "relu"]
    jsonschema.validate({"architecture": "toy", "preset": "tiny", "block": {"layers": 2}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"architecture": "toy", "block": {"layrs": 2}}, schema)
    two = architecture_schema("twopart")
    assert set(two["properties"]["global_config"]["properties"]) == {"width", "dropout", "device"}
    whole = config_schema()
    jsonschema.validate({"model": {"architecture": "toy", "preset": "tiny"}, "training": {"max_steps": 3}}, whole)


def test_model_config_round_trips(tmp_path):
    from model_foundry.config import load_model_config

    model = load_config(write(tmp_path, GOOD)).model
    again = load_model_config(model.to_dict())
    assert again.params == model.params
    assert model.evolve(vocab_size=100).vocab_size == 100


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  architecture: caf\xe9\n".encode("latin-1"))
    assert problems(str(path)) == [f"{path}:2:1: not UTF-8 text (invalid continuation byte); save the file as UTF-8"]


def test_merge_keys_are_followed(tmp_path):
    path = write(tmp_path, """
        base: &base {architecture: toy, preset: tiny}
        model:
          <<: *base
          block: {layers: 3}
        """)
    assert load_config(path, sections=("model",)).model.block.layers == 3


def test_a_loaded_config_locates_its_keys(tmp_path):
    """Checks made after loading (the training loop's) report a problem by key; the config says where it was given."""
    path = write(tmp_path, GOOD)
    config = load_config(path, ["training.learning_rate=1e-3", "data.block_size=16"], sections=("model", "training"))
    assert config.locate("model.block.hidden_size") == Location(path, 5, 18)
    assert config.locate("training.learning_rate") == Location("--set training.learning_rate=1e-3", 1, 24)
    assert config.locate("model.block.layers") == Location("preset 'tiny' of toy")
    assert config.locate("training.seed") == Location(path, 7, 3)  # a default: where its section is
    assert config.locate("data.train_files[0]") == Location("--set data.block_size=16", 1, 17)  # its section came from here
    assert FoundryConfig(path="x.yaml").locate("training.seed") == Location("x.yaml")
