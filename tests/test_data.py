"""The data section: finding files, reading documents, the token cache, validation splits."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from model_foundry.errors import ConfigError, FoundryError
from model_foundry.text import data as data_module
from model_foundry.text.config import TextDataConfig, TokenizerConfig
from model_foundry.text.data import (
    TokenBlocks,
    load_text_data,
    obtain_tokenizer,
    read_documents,
    resolve_files,
    separator_id,
    tokenize_to_array,
)

LINES = [f"line {i}: the quick brown fox jumps over the lazy dog {i % 7}" for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    text = folder / "text.txt"
    text.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return obtain_tokenizer(TokenizerConfig(vocab_size=300, min_frequency=1), TextDataConfig(train_files=[str(text)]), str(folder / "cache"))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_globs_expand_in_order_and_relative_paths_start_at_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "b.txt", "b\n")
    write(tmp_path / "a.txt", "a\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_files(["*.txt"], "data.train_files") == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert resolve_files(["b.txt"], "data.train_files") == [str(tmp_path / "b.txt")]


def test_missing_empty_and_unmatched_files_are_all_reported(tmp_path):
    empty = write(tmp_path / "empty.txt", "")
    with pytest.raises(ConfigError) as caught:
        resolve_files([str(tmp_path / "nope.txt"), empty, str(tmp_path / "*.jsonl")], "data.train_files")
    message = str(caught.value)
    assert "data.train_files[0]: data file not found" in message
    assert "data.train_files[1]: data file" in message and "is empty" in message
    assert "data.train_files[2]: no file matches" in message


def test_documents_per_line_whole_file_and_jsonl(tmp_path):
    text = write(tmp_path / "t.txt", "one\n\n  \ntwo\n")
    assert list(read_documents(text, TextDataConfig())) == ["one", "two"]
    assert list(read_documents(text, TextDataConfig(document_per_line=False))) == ["one\n\n  \ntwo\n"]
    jsonl = write(tmp_path / "t.jsonl", '{"text": "alpha"}\n\n{"text": "beta", "id": 2}\n')
    assert list(read_documents(jsonl, TextDataConfig())) == ["alpha", "beta"]
    body = write(tmp_path / "b.jsonl", '{"body": "x"}\n')
    assert list(read_documents(body, TextDataConfig(text_field="body"))) == ["x"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": \n', "b.jsonl:2: invalid JSON"),
        ('{"other": "x"}\n', "b.jsonl:1: no 'text' field"),
        ('{"text": 3}\n', "b.jsonl:1: field 'text' is int"),
        ("\n   \n", "holds no text"),
    ],
)
def test_bad_documents_are_located(tmp_path, content, message):
    path = write(tmp_path / "b.jsonl", content)
    with pytest.raises(FoundryError, match=message.replace("(", r"\(")):
        list(read_documents(path, TextDataConfig()))


def test_documents_are_separated_by_eos(tokenizer):
    ids = tokenize_to_array(tokenizer, ["hello world", "the fox"])
    eos = separator_id(tokenizer)
    first = tokenizer.encode("hello world", add_special_tokens=False)
    second = tokenizer.encode("the fox", add_special_tokens=False)
    assert ids.tolist() == first + [eos] + second + [eos]


def test_blocks_cut_the_stream_and_drop_the_tail():
    blocks = TokenBlocks(np.arange(10, dtype=np.uint16), 4)
    assert len(blocks) == 2 and blocks.num_tokens == 8
    assert blocks[1].tolist() == [4, 5, 6, 7]
    with pytest.raises(IndexError):
        blocks[2]


def test_second_load_reads_the_cache_without_tokenizing(tmp_path, tokenizer, monkeypatch):
    train = write(tmp_path / "train.txt", "\n".join(LINES))
    config = TextDataConfig(train_files=[train], validation_fraction=0.25, block_size=8)
    first = load_text_data(config, tokenizer, str(tmp_path / "cache"))
    assert first.cache_hits == 0
    assert isinstance(first.train.tokens, np.memmap)

    def no_tokenizing(*_args, **_kwargs):
        raise AssertionError("tokenized again despite a cache entry")

    monkeypatch.setattr(data_module, "encode_documents", no_tokenizing)
    second = load_text_data(config, tokenizer, str(tmp_path / "cache"))
    assert second.cache_hits == 1
    assert np.array_equal(first.train.tokens, second.train.tokens)
    assert np.array_equal(first.validation.tokens, second.validation.tokens)


def test_changed_file_or_tokenizer_invalidates_the_cache(tmp_path, tokenizer):
    train = tmp_path / "train.txt"
    write(train, "\n".join(LINES))
    config = TextDataConfig(train_files=[str(train)], validation_fraction=0.0, block_size=8)
    cache = str(tmp_path / "cache")
    load_text_data(config, tokenizer, cache)
    write(train, "\n".join(LINES[:20]) + "\nsomething new entirely\n")
    assert load_text_data(config, tokenizer, cache).cache_hits == 0
    assert load_text_data(config, tokenizer, cache).cache_hits == 1
    other = obtain_tokenizer(TokenizerConfig(vocab_size=290, min_frequency=1), config, cache)
    assert load_text_data(config, other, cache).cache_hits == 0


def test_validation_fraction_holds_out_an_exact_share_of_documents(tmp_path, tokenizer):
    train = write(tmp_path / "train.txt", "\n".join(LINES))
    held = load_text_data(TextDataConfig(train_files=[train], validation_fraction=0.25, block_size=4), tokenizer, str(tmp_path / "c"))
    entry = next(p for p in (tmp_path / "c").iterdir() if p.name.startswith("tokens-"))
    meta = json.loads((entry / "meta.json").read_text())
    assert (meta["documents"], meta["held_out_documents"]) == (30, 10)
    eos = separator_id(tokenizer)
    assert int((held.train.tokens == eos).sum()) == 30 and int((held.validation.tokens == eos).sum()) == 10


def test_validation_files_and_no_validation(tmp_path, tokenizer):
    train = write(tmp_path / "train.txt", "\n".join(LINES))
    valid = write(tmp_path / "valid.txt", "\n".join(LINES[:10]))
    both = load_text_data(TextDataConfig(train_files=[train], validation_files=[valid], block_size=4), tokenizer, str(tmp_path / "c"))
    assert both.validation is not None and len(both.validation) > 0
    none = load_text_data(TextDataConfig(train_files=[train], validation_fraction=0.0, block_size=4), tokenizer, str(tmp_path / "c"))
    assert none.validation is None


def test_a_split_with_no_document_is_an_error_and_leaves_no_cache_entry(tmp_path, tokenizer):
    whole = write(tmp_path / "one.txt", "\n".join(LINES))
    config = TextDataConfig(train_files=[whole], document_per_line=False, validation_fraction=0.5, block_size=4)
    with pytest.raises(FoundryError, match="split is empty"):
        load_text_data(config, tokenizer, str(tmp_path / "c"))
    assert not [name for name in os.listdir(tmp_path / "c") if not name.startswith(".")]


def test_a_bad_record_midway_leaves_no_cache_entry(tmp_path, tokenizer):
    records = [json.dumps({"text": line}) for line in LINES] + ["{broken"]
    path = write(tmp_path / "d.jsonl", "\n".join(records) + "\n")
    with pytest.raises(FoundryError, match="d.jsonl:41: invalid JSON"):
        load_text_data(TextDataConfig(train_files=[path], validation_fraction=0.0), tokenizer, str(tmp_path / "c"))
    assert os.listdir(tmp_path / "c") == []


def test_too_little_text_for_one_block_names_block_size(tmp_path, tokenizer):
    path = write(tmp_path / "t.txt", "tiny\n")
    with pytest.raises(ConfigError, match="data.block_size"):
        load_text_data(TextDataConfig(train_files=[path], validation_fraction=0.0, block_size=512), tokenizer, str(tmp_path / "c"))


def test_trained_tokenizer_is_cached_and_jsonl_text_is_what_it_learns(tmp_path, monkeypatch):
    from model_foundry.text import tokenization

    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps({"text": line}) for line in LINES) + "\n")
    config, data = TokenizerConfig(vocab_size=300, min_frequency=1), TextDataConfig(train_files=[path])
    first = obtain_tokenizer(config, data, str(tmp_path / "c"))
    assert '{"' not in first.get_vocab() and 'text' not in first.get_vocab()  # no JSON syntax learnt

    def no_training(*_args, **_kwargs):
        raise AssertionError("trained again despite a cached tokenizer")

    monkeypatch.setattr(tokenization, "tokenizer_from_config", no_training)
    second = obtain_tokenizer(config, data, str(tmp_path / "c"))
    assert second.get_vocab() == first.get_vocab()
