"""Bad input is a user error (FoundryError; exit 2 and a message), never a traceback.

The corrupt checkpoints are generated: a tiny GPT-2 (tied weights) is saved once per module,
and each case damages a copy of it. Every case goes through ``model_foundry.load`` (which
must raise FoundryError and nothing else) and through ``foundry generate`` and ``foundry eval``
(exit 2, no traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from typing import Callable

import pytest

import model_foundry
from model_foundry.checkpoint import CONFIG_FILE, META_FILE, WEIGHTS_FILE
from model_foundry.cli import main
from model_foundry.errors import FoundryError

TEXT = "To be, or not to be: that is the question.\n" * 20
MODEL = {
    "architecture": "gpt2",
    "vocab_size": None,
    "transformer": {"layers": 2, "hidden_size": 16, "attention_heads": 2, "intermediate_hidden_size": 32,
                    "max_position_embeddings": 32},
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    """A tiny GPT-2 checkpoint with a character tokenizer, written once for every case."""
    from model_foundry.factory import train_tokenizer

    root = tmp_path_factory.mktemp("robust")
    (root / "train.txt").write_text(TEXT, encoding="utf-8")
    tokenizer = train_tokenizer({"tokenizer_type": "char", "vocab_size": 40}, [root / "train.txt"])
    model = model_foundry.create_model({"model": {**MODEL, "vocab_size": len(tokenizer)}})
    return model_foundry.save(model, root / "ckpt", tokenizer=tokenizer)


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[str], None]:
    def corrupt(directory: str) -> None:
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        change(data)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
    return corrupt


def write(name: str, content: bytes | str) -> Callable[[str], None]:
    def corrupt(directory: str) -> None:
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(os.path.join(directory, name), mode) as handle:
            handle.write(content)
    return corrupt


def remove(name: str) -> Callable[[str], None]:
    return lambda directory: os.remove(os.path.join(directory, name))


def link(name: str, target: Callable[[str], str]) -> Callable[[str], None]:
    def corrupt(directory: str) -> None:
        path = os.path.join(directory, name)
        os.remove(path)
        os.symlink(target(directory), path)
    return corrupt


def truncate(directory: str) -> None:
    path = os.path.join(directory, WEIGHTS_FILE)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 100)


def replace_tensor(name: str, make: Callable[[], object]) -> Callable[[str], None]:
    def corrupt(directory: str) -> None:
        from safetensors import safe_open
        from safetensors.torch import save_file

        path = os.path.join(directory, WEIGHTS_FILE)
        with safe_open(path, "pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata()
        tensors[name] = make()
        save_file(tensors, path, metadata=metadata)
    return corrupt


def set_layers(count: int) -> Callable[[str], None]:
    def corrupt(directory: str) -> None:
        from model_foundry.checkpoint import read_yaml_plain, write_yaml

        path = os.path.join(directory, CONFIG_FILE)
        data = read_yaml_plain(path)
        data["model"]["transformer"]["layers"] = count
        write_yaml(path, data)
    return corrupt


def huge_header(directory: str) -> None:
    with open(os.path.join(directory, WEIGHTS_FILE), "r+b") as handle:
        handle.write(struct.pack("<Q", 2**62))


def wider_tokenizer(directory: str) -> None:
    from model_foundry.factory import train_tokenizer

    text = os.path.join(directory, "wide.txt")
    with open(text, "w", encoding="utf-8") as handle:
        handle.write("".join(chr(code) for code in range(0x400, 0x500)) * 5)
    train_tokenizer({"tokenizer_type": "char", "vocab_size": 200}, [text]).save_pretrained(directory)
    os.remove(text)


def torch_tensor(shape, dtype="float32"):
    def make():
        import torch

        return torch.zeros(shape, dtype=getattr(torch, dtype))
    return make


# (case id, how to damage the checkpoint, what the message says, whether load() itself fails)
CASES = [
    ("meta-invalid-json", write(META_FILE, "{not json"), "is not valid JSON", True),
    ("meta-empty", write(META_FILE, ""), "is not valid JSON", True),
    ("meta-a-list", write(META_FILE, "[1, 2]"), "must hold a JSON object, got list", True),
    ("meta-not-utf8", write(META_FILE, b'{"a": "\xff\xfe"}'), "is not UTF-8", True),
    ("meta-newer-format", edit_json(META_FILE, lambda m: m.update(format_version=999)),
     "upgrade: pip install -U model-foundry", True),
    ("meta-format-a-string", edit_json(META_FILE, lambda m: m.update(format_version="banana")),
     "format_version must be a positive integer, got 'banana'", True),
    ("meta-other-architecture", edit_json(META_FILE, lambda m: m.update(architecture="bert")),
     "foundry.json says architecture 'bert', config.yaml says 'gpt2'", True),
    ("meta-no-architecture", edit_json(META_FILE, lambda m: m.pop("architecture")), "'architecture' must be", True),
    ("config-missing", remove(CONFIG_FILE), "has no config.yaml", True),
    ("config-invalid", write(CONFIG_FILE, "model: [unclosed\n"), "invalid YAML", True),
    ("config-empty", write(CONFIG_FILE, ""), "the file is empty", True),
    ("config-a-list", write(CONFIG_FILE, "- model\n"), "the top level must be a mapping", True),
    ("config-python-tag", write(CONFIG_FILE, "model: !!python/object/apply:os.system [echo pwned]\n"),
     "YAML tag '!!python/object/apply:os.system' is not allowed", True),
    ("config-no-model", write(CONFIG_FILE, "training: {max_steps: 3}\n"), "has no 'model' mapping", True),
    ("config-not-utf8", write(CONFIG_FILE, b"model:\n  architecture: gpt\xff\n"), "not UTF-8", True),
    ("config-invalid-model", set_layers(-2), "no longer validates", True),
    ("config-huge-model", set_layers(100_000), "model.safetensors holds", True),
    ("weights-missing", remove(WEIGHTS_FILE), "has no model.safetensors", True),
    ("weights-empty", write(WEIGHTS_FILE, b""), "is not a safetensors file", True),
    ("weights-not-safetensors", write(WEIGHTS_FILE, b"PK\x03\x04 a zip, say, or a pickle" * 10), "is not a safetensors file", True),
    ("weights-huge-header-length", huge_header, "is not a safetensors file", True),
    ("weights-truncated", truncate, "is truncated or damaged", True),
    ("weights-wrong-shape", replace_tensor("hf_model.transformer.wpe.weight", torch_tensor((31, 16))),
     "tensor 'hf_model.transformer.wpe.weight' has shape [31, 16], the model expects [32, 16]", True),
    ("weights-integer-dtype", replace_tensor("hf_model.transformer.wpe.weight", torch_tensor((32, 16), "int64")),
     "tensor 'hf_model.transformer.wpe.weight' is saved as I64, the model expects float32", True),
    ("weights-extra-tensor", replace_tensor("surplus", torch_tensor((2,))), "unexpected: ['surplus']", True),
    ("config-symlink-out", link(CONFIG_FILE, lambda d: "/etc/passwd"), "outside the checkpoint directory", True),
    ("weights-symlink-out", link(WEIGHTS_FILE, lambda d: os.path.join(os.path.dirname(d), "elsewhere")),
     "is a broken symlink", True),
    ("symlink-loop", link(CONFIG_FILE, lambda d: os.path.join(d, CONFIG_FILE)), "is a symlink loop", True),
    ("tokenizer-corrupt", write("tokenizer.json", '{"version": "1.0", "model": 3'), "cannot load the tokenizer", False),
    ("tokenizer-not-json", write("tokenizer.json", b"\x00\x01binary"), "cannot load the tokenizer", False),
    ("tokenizer-symlink-out", link("tokenizer.json", lambda d: "/etc/hostname"), "outside the checkpoint", True),
    ("tokenizer-too-wide", wider_tokenizer, "more than the model's vocab_size", False),
]


@pytest.fixture
def damaged(request, saved, tmp_path) -> str:
    directory = str(tmp_path / "ckpt")
    shutil.copytree(saved, directory, symlinks=True)
    request.param(directory)
    return directory


@pytest.mark.parametrize("damaged, message, load_fails", [case[1:] for case in CASES], ids=[case[0] for case in CASES],
                         indirect=["damaged"])
def test_damaged_checkpoint_is_a_user_error(damaged, message, load_fails, tmp_path, capsys):
    started = time.monotonic()
    if load_fails:
        with pytest.raises(FoundryError) as info:
            model_foundry.load(damaged)
        assert message in str(info.value)
    else:
        model_foundry.load(damaged)
    data = tmp_path / "eval.txt"
    data.write_text(TEXT, encoding="utf-8")
    for argv in (["generate", damaged, "--prompt", "To be", "--max-new-tokens", "2", "--seed", "0"],
                 ["eval", damaged, "--data", str(data), "--block-size", "8"]):
        capsys.readouterr()
        assert main(argv) == 2, argv  # any other exception propagates and fails the test
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "Traceback" not in err, err
        assert len(err.splitlines()) <= 20, err
    assert time.monotonic() - started < 30


def test_the_undamaged_copy_loads_with_its_tied_weights(saved, capsys):
    model = model_foundry.load(saved)
    assert model.hf_model.lm_head.weight is model.hf_model.transformer.wte.weight
    assert main(["generate", saved, "--prompt", "To be", "--max-new-tokens", "2", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("To be")


def test_a_float16_checkpoint_loads_as_the_models_float32(saved, tmp_path):
    import torch

    directory = str(tmp_path / "half")
    shutil.copytree(saved, directory)
    original = model_foundry.load(saved).hf_model.transformer.wpe.weight
    replace_tensor("hf_model.transformer.wpe.weight", lambda: original.detach().half())(directory)
    loaded = model_foundry.load(directory).hf_model.transformer.wpe.weight
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, original.detach().half().float())


EXPORT_CASES = [case for case in CASES if case[0] in ("meta-a-list", "meta-newer-format", "config-symlink-out")]


@pytest.mark.parametrize("damaged, message", [case[1:3] for case in EXPORT_CASES], ids=[case[0] for case in EXPORT_CASES],
                         indirect=["damaged"])
def test_exporting_a_damaged_checkpoint_is_a_user_error(damaged, message, tmp_path, capsys):
    assert main(["export", damaged, "--to", "hf", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


# --- sizes and files that validate catches before train would fail -----------------------------


def gpt2_config(tmp_path, **data) -> str:
    (tmp_path / "train.txt").write_text(TEXT, encoding="utf-8")
    lines = ["model:", "  architecture: gpt2", "  transformer: {layers: 2, hidden_size: 16, attention_heads: 2,",
             "                intermediate_hidden_size: 32, max_position_embeddings: 32}",
             "tokenizer: {tokenizer_type: char, vocab_size: 40}",
             "data:", f"  train_files: [{data.get('train', tmp_path / 'train.txt')}]",
             f"  validation_files: [{tmp_path / 'train.txt'}]", f"  block_size: {data.get('block_size', 16)}",
             "training: {max_steps: 100, warmup_steps: 500}"]
    path = tmp_path / "config.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def validate(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["validate", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err


def test_validate_accepts_a_config_that_trains(tmp_path, capsys):
    code, out = validate(capsys, gpt2_config(tmp_path))
    assert code == 0 and "OK" in out, out


@pytest.mark.parametrize("override, message", [
    (["--set", "data.block_size=64"], "data.block_size: 64 is longer than the model's max_sequence_length (32)"),
    (["--set", "data.train_files=[nowhere.txt]"], "data.train_files[0]: data file not found: 'nowhere.txt'"),
    (["--set", "tokenizer.vocab_size=1e12"], "tokenizer.vocab_size: must be between 1 and 16777216"),
    (["--set", "model.transformer.max_position_embeddings=1000000000"],
     "the model is larger than 201.33M parameters (the build on the meta device was stopped at 16.00B parameters"),
    (["--set", "model.transformer.layers=100000"], "on the meta device took over 2 CPU seconds and was stopped at"),
])
def test_validate_refuses_what_train_would_fail_on(tmp_path, capsys, monkeypatch, override, message):
    monkeypatch.setenv("FOUNDRY_MEMORY_LIMIT", "3G")
    monkeypatch.setenv("FOUNDRY_BUILD_SECONDS", "2")
    started = time.monotonic()
    code, out = validate(capsys, gpt2_config(tmp_path), *override)
    assert code == 2 and message in out, out
    assert time.monotonic() - started < 20


def test_validate_names_the_training_memory_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FOUNDRY_MEMORY_LIMIT", "20K")
    code, out = validate(capsys, gpt2_config(tmp_path))
    assert code == 2 and "the model is larger than 1.28K parameters (the build on the meta device was stopped at" in out, out
    assert "so at most 1.28K parameters fit in 20.0 KiB (FOUNDRY_MEMORY_LIMIT)" in out, out
    monkeypatch.setenv("FOUNDRY_MEMORY_LIMIT", "lots")
    code, out = validate(capsys, gpt2_config(tmp_path))
    assert code == 2 and "FOUNDRY_MEMORY_LIMIT='lots' is not understood" in out, out


def test_build_of_a_huge_stack_answers_quickly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FOUNDRY_BUILD_SECONDS", "1")
    started = time.monotonic()
    assert main(["build", gpt2_config(tmp_path), "--set", "model.transformer.layers=100000"]) == 2
    err = capsys.readouterr().err
    assert "building the model on the meta device took over 1 CPU seconds and was stopped at" in err, err
    assert time.monotonic() - started < 15


def test_a_transformers_directory_with_only_pickled_weights_is_refused(tmp_path, capsys):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path / "foreign"
    hf_config = GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=16, vocab_size=20)
    hf_config.save_pretrained(directory)
    torch.save(GPT2LMHeadModel(hf_config).state_dict(), directory / "pytorch_model.bin")
    with pytest.raises(FoundryError, match=r"only pickled weights \(pytorch_model.bin\); .* never unpickles"):
        model_foundry.load(directory)
    assert main(["generate", str(directory), "--prompt", "x"]) == 2
    assert "never unpickles" in capsys.readouterr().err


def test_tokenizer_training_cuts_lines_without_whitespace(tmp_path):
    from model_foundry.factory import train_tokenizer
    from model_foundry.text import tokenization

    line = "".join("abcdefghij"[(i * 7919) % 10] for i in range(300_000))
    path = tmp_path / "one-line.txt"
    path.write_text("short line\n" + line + "\nlast", encoding="utf-8")
    pieces = list(tokenization._bounded_lines([str(path)]))
    assert "".join(pieces) == path.read_text(encoding="utf-8")
    assert max(map(len, pieces)) == tokenization._LINE_CHARS and pieces[0] == "short line\n"
    started = time.monotonic()
    tokenizer = train_tokenizer({"tokenizer_type": "wordpiece", "vocab_size": 300}, [path])
    assert time.monotonic() - started < 10 and len(tokenizer) > 20


# --- the command line explains itself ---------------------------------------------------------


def test_help_shows_no_rst_markup_and_every_positional_argument_has_help():
    from model_foundry.cli import build_parser

    parser = build_parser()
    [subparsers] = [action for action in parser._actions if action.dest == "command"]
    for name, command in subparsers.choices.items():
        assert "``" not in command.format_help(), name
        for action in command._actions:
            if not action.option_strings:
                assert action.help, (name, action.dest)


def test_expected_a_list_shows_the_set_syntax(tmp_path):
    from model_foundry.config import load_config
    from model_foundry.errors import ConfigError

    path = gpt2_config(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["data.train_files=a.txt"])
    assert "data.train_files: expected a list, got str 'a.txt'; write [a, b] (on the command line: " \
           "--set data.train_files='[a, b]')" in str(info.value)


@pytest.mark.parametrize("name, message", [
    ("gpt2", "foundry-plugin-gpt2 0.1.0"),
    ("lstm", "architecture 'lstm' is provided by foundry-plugin-rnn"),
])
def test_new_plugin_refuses_an_installed_name(tmp_path, capsys, name, message):
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_new_plugin_scaffold_ignores_build_outputs(tmp_path, capsys):
    assert main(["new-plugin", "fresh_name", "--dir", str(tmp_path)]) == 0
    ignored = (tmp_path / "foundry-plugin-fresh_name" / ".gitignore").read_text().split()
    assert {"build/", "*.egg-info/"} <= set(ignored)


def test_validate_warns_when_the_builder_cannot_run_on_the_meta_device(tmp_path, capsys, monkeypatch):
    import attrs

    from model_foundry.records import ModelBuilder
    from model_foundry.registry import get_registry

    def refuse(config):
        raise NotImplementedError("no meta tensors here")

    architectures = get_registry().architectures
    monkeypatch.setitem(architectures, "gpt2", [attrs.evolve(entry, builder=ModelBuilder("gpt2", refuse)) for entry in architectures["gpt2"]])
    code, out = validate(capsys, gpt2_config(tmp_path))
    assert code == 0 and "OK" in out, out
    assert "warning: the model could not be built on the meta device, so its size was not checked " \
           "(NotImplementedError: no meta tensors here)" in out, out
