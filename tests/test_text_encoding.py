"""Encoding text fast without changing an id: long documents in parallel pieces, a cached
tokenizer read without transformers (issue 24 item 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from model_foundry.factory import load_tokenizer, train_tokenizer
from model_foundry.text import data as data_module
from model_foundry.text.config import TextDataConfig, TokenizerConfig
from model_foundry.text.data import (
    document_pieces,
    encode_documents,
    load_text_data,
    obtain_tokenizer,
    tokenizer_fingerprint,
)
from model_foundry.text.tokenization import SavedTokenizer, read_saved_tokenizer, splits_at_spaces

HERE = os.path.dirname(os.path.abspath(__file__))
# What a cut could get wrong: runs and kinds of whitespace before words (GPT-2's regex keeps a
# space after whitespace with the run), contractions, digits, punctuation, Unicode spaces and
# separators, CJK (BERT pads it with spaces), cases that lowercase to other lengths, final sigma.
TRICKY = (
    "KING. What's he that   wishes so?\n\n  My cousin Westmoreland? No, 'tis 1415 and 12 34.\t\tTab\tthere \n"
    "Non-breaking\u00a0space,\u3000ideographic\u2003em \x1cfile-separator \x85next-line end.  \n"
    "汉字 mixed with English. İstanbul ΟΔΟΣ Σ straße ǅ. <s> is not special here;  </s> either.\r\n"
)


def corpus() -> str:
    with open(os.path.join(HERE, "data", "english.txt"), encoding="utf-8") as handle:
        english = handle.read()
    with open(os.path.join(HERE, "data", "hindi.txt"), encoding="utf-8") as handle:
        hindi = handle.read()
    indented = "Enter.\n\n  Exeunt.\n\n  " * 150  # teaches merges of line breaks with the spaces after them
    return (TRICKY + english + TRICKY + hindi + indented + TRICKY) * 2


@pytest.fixture(scope="module")
def training_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "train.txt"
    path.write_text(corpus(), encoding="utf-8")
    return str(path)


KINDS = [
    {"tokenizer_type": "bpe", "vocab_size": 400},
    {"tokenizer_type": "bpe", "vocab_size": 400, "lowercase": True},
    {"tokenizer_type": "wordpiece", "vocab_size": 400},
    {"tokenizer_type": "wordpiece", "vocab_size": 400, "lowercase": True},
    {"tokenizer_type": "unigram", "vocab_size": 400},
    {"tokenizer_type": "char", "vocab_size": 200},
    {"tokenizer_type": "char", "vocab_size": 200, "lowercase": True},
]


def whole_documents(tokenizer, documents: list[str]) -> np.ndarray:
    """The serial reference: each document encoded whole by the tokenizers library, then the separator."""
    separator = data_module.separator_id(tokenizer)
    backend = tokenizer.backend_tokenizer
    return np.array([i for d in documents for i in [*backend.encode(d, add_special_tokens=False).ids, separator]])


@pytest.mark.parametrize("parallel", ["true", "false"])
@pytest.mark.parametrize("kind", KINDS, ids=["bpe", "bpe-lower", "wordpiece", "wordpiece-lower", "unigram", "char", "char-lower"])
def test_long_documents_encode_in_pieces_to_the_same_ids(kind, parallel, training_file, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", parallel)
    tokenizer = train_tokenizer({**kind, "min_frequency": 1}, [training_file])
    assert splits_at_spaces(tokenizer.backend_tokenizer)
    text = corpus()
    documents = [text, "short one", text[: len(text) // 3]]
    monkeypatch.setattr(data_module, "PIECE_CHARS", 1)  # a cut at every place one may go
    assert len(document_pieces(text)) > 1000
    pieces = np.concatenate(list(encode_documents(tokenizer, documents)))
    assert pieces.tolist() == whole_documents(tokenizer, documents).tolist()


def test_whitespace_merges_of_a_gpt2_style_vocabulary_stay_whole(monkeypatch):
    """GPT-2's own vocabulary merges runs of whitespace ("\\n\\n " is one token), which the core's
    trainers, fed line by line, never learn: a cut before a space after whitespace would split one."""
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("Ċ", "Ċ"), ("ĊĊ", "Ġ"), ("Ġ", "Ġ"), ("ĠĠ", "Ġ"), ("Ċ", "Ġ"), ("ĊĠ", "Ġ")]
    vocab = {token: index for index, token in enumerate(["</s>", *alphabet, *("".join(m) for m in merges)])}
    backend = Tokenizer(models.BPE(vocab, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.add_special_tokens(["</s>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    assert splits_at_spaces(backend)
    monkeypatch.setattr(data_module, "PIECE_CHARS", 1)
    documents = [corpus(), "Exeunt.\n\n  Enter.\n   Three. \n Four."]
    assert "ĊĊĠ" in backend.encode(documents[1]).tokens
    pieces = np.concatenate(list(encode_documents(tokenizer, documents)))
    assert pieces.tolist() == whole_documents(tokenizer, documents).tolist()


def test_pieces_are_the_document_cut_before_spaces_after_a_non_space(monkeypatch):
    monkeypatch.setattr(data_module, "PIECE_CHARS", 4)
    text = "one two\n  three four,five six"
    pieces = document_pieces(text)
    assert "".join(pieces) == text
    assert pieces == ["one two\n  three", " four,five", " six"]  # not before the spaces after the line break
    assert document_pieces("no-space-at-all" * 3) == ["no-space-at-all" * 3]


def byte_level_without_regex(training_file: str) -> Tokenizer:
    """A byte-level BPE whose pre-tokenizer does not split the text: merges may span spaces."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=1, special_tokens=["</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    with open(training_file, encoding="utf-8") as handle:
        backend.train_from_iterator(handle.read().split("\n\n"), trainer)
    return backend


def test_a_tokenizer_whose_ids_could_change_at_a_cut_encodes_documents_whole(training_file, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    backend = byte_level_without_regex(training_file)
    assert not splits_at_spaces(backend)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>")
    monkeypatch.setattr(data_module, "PIECE_CHARS", 1)
    documents = [corpus()]
    pieces = np.concatenate(list(encode_documents(tokenizer, documents)))
    assert pieces.tolist() == whole_documents(tokenizer, documents).tolist()
    # and the others refused: an added token holding a space, or stripping the spaces after it
    spaced = train_tokenizer({"tokenizer_type": "bpe", "vocab_size": 400, "min_frequency": 1}, [training_file])
    spaced.add_special_tokens({"additional_special_tokens": ["<end of text>"]})
    assert not splits_at_spaces(spaced.backend_tokenizer)
    stripping = train_tokenizer({"tokenizer_type": "bpe", "vocab_size": 400, "min_frequency": 1}, [training_file])
    from tokenizers import AddedToken

    stripping.add_special_tokens({"additional_special_tokens": [AddedToken("<x>", rstrip=True)]})
    assert not splits_at_spaces(stripping.backend_tokenizer)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram", "char"])
def test_a_cached_tokenizer_reads_as_transformers_loads_it(kind, training_file, tmp_path):
    data = TextDataConfig(train_files=[training_file], validation_fraction=0.0, block_size=8)
    config = TokenizerConfig(tokenizer_type=kind, vocab_size=200 if kind == "char" else 400, min_frequency=1)
    fresh = obtain_tokenizer(config, data, str(tmp_path / "cache"))
    cached = obtain_tokenizer(config, data, str(tmp_path / "cache"))
    assert type(fresh) is SavedTokenizer and type(cached) is SavedTokenizer
    (directory,) = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("tokenizer-")]
    reference = load_tokenizer(directory)
    assert len(cached) == len(reference)
    roles = ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token", "mask_token")
    assert {r: getattr(cached, r) for r in roles} == {r: getattr(reference, r) for r in roles}
    assert {r: getattr(cached, f"{r}_id") for r in roles} == {r: getattr(reference, f"{r}_id") for r in roles}
    assert cached.all_special_tokens == reference.all_special_tokens
    assert cached.all_special_ids == reference.all_special_ids
    assert tokenizer_fingerprint(cached) == tokenizer_fingerprint(reference)  # one token cache for both
    text = corpus()[:3000]
    assert list(encode_documents(cached, [text]))[0].tolist() == list(encode_documents(reference, [text]))[0].tolist()
    # anything else is transformers' answer
    assert cached("A line.", add_special_tokens=False)["input_ids"] == reference("A line.", add_special_tokens=False)["input_ids"]
    assert cached.decode(reference.encode("A line.")) == reference.decode(reference.encode("A line."))
    # a checkpoint's copy loads back
    cached.save_pretrained(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert again.get_vocab() == reference.get_vocab() and again.all_special_ids == reference.all_special_ids


def test_a_saved_tokenizer_with_other_special_tokens_is_loaded_by_transformers(training_file, tmp_path):
    tokenizer = train_tokenizer({"tokenizer_type": "bpe", "vocab_size": 400, "min_frequency": 1}, [training_file])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<x>"]})
    tokenizer.save_pretrained(tmp_path / "t")
    loaded = read_saved_tokenizer(str(tmp_path / "t"))
    assert type(loaded) is not SavedTokenizer and "<x>" in loaded.all_special_tokens


RUN = textwrap.dedent("""
    import hashlib, json, sys
    from model_foundry.text.config import TextDataConfig, TokenizerConfig
    from model_foundry.text.data import load_text_data, obtain_tokenizer
    data = TextDataConfig(train_files=[sys.argv[1]], document_per_line=False, validation_fraction=0.34, block_size=8)
    tokenizer = obtain_tokenizer(TokenizerConfig(vocab_size=400, min_frequency=1), data, sys.argv[2])
    loaded = load_text_data(data, tokenizer, sys.argv[2])
    print(json.dumps({"hits": loaded.cache_hits, "transformers": "transformers" in sys.modules,
                      "train": loaded.train.tokens.tolist(), "validation": loaded.validation.tokens.tolist()}))
""")


@pytest.mark.slow  # two fresh processes, one training a tokenizer on 0.5 MB
def test_a_cached_run_does_not_import_transformers_and_reads_the_ids_a_serial_run_writes(tmp_path, monkeypatch):
    for number in range(3):  # whole files as documents, each several pieces long
        text = (corpus() * 16)[number * 1000:] + f" part {number}"
        (tmp_path / f"part-{number}.txt").write_text(text, encoding="utf-8")
    assert len(text) > 3 * data_module.PIECE_CHARS
    pattern = str(tmp_path / "part-*.txt")
    environment = {**os.environ, "TOKENIZERS_PARALLELISM": "true"}

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", RUN, pattern, str(tmp_path / "cache")], capture_output=True,
                              text=True, env=environment, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["hits"] == 0 and first["transformers"]  # it trained the tokenizer
    assert second["hits"] == 1 and not second["transformers"]
    assert second["train"] == first["train"] and second["validation"] == first["validation"]
    # the ids of a serial run here, on one thread
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    data = TextDataConfig(train_files=[pattern], document_per_line=False, validation_fraction=0.34, block_size=8)
    tokenizer = load_tokenizer(next((tmp_path / "cache").glob("tokenizer-*")))
    serial = load_text_data(data, tokenizer, str(tmp_path / "serial"))
    assert serial.cache_hits == 0
    assert serial.train.tokens.tolist() == first["train"] and serial.validation.tokens.tolist() == first["validation"]


TRAIN = textwrap.dedent("""
    import json, sys
    from model_foundry import cli
    code = cli.main(["train", *sys.argv[1:]])
    print(json.dumps({"code": code, "transformers": "transformers" in sys.modules}))
""")


@pytest.mark.slow  # two fresh training processes
def test_a_cached_text_run_of_a_model_without_transformers_trains_without_importing_it(tmp_path):
    """The LSTM needs no transformers and neither does its cached data, nor the learning-rate schedule."""
    (tmp_path / "text.txt").write_text(corpus(), encoding="utf-8")
    config = tmp_path / "lstm.yaml"
    config.write_text(textwrap.dedent(f"""
        model: {{architecture: lstm, preset: tiny}}
        tokenizer: {{tokenizer_type: char, vocab_size: 128, min_frequency: 1}}
        data: {{train_files: [{tmp_path / 'text.txt'}], validation_fraction: 0.2, block_size: 16,
               cache_dir: {tmp_path / 'cache'}}}
        training: {{objective: causal_lm, max_steps: 2, batch_size: 2, warmup_steps: 1, lr_scheduler: cosine,
                   eval_every: 0, save_every: 0}}
    """))

    def run(name: str) -> dict:
        done = subprocess.run([sys.executable, "-c", TRAIN, str(config), "--set", f"training.output_dir={tmp_path / name}"],
                              capture_output=True, text=True, check=True, cwd=tmp_path)
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = run("first"), run("second")
    assert first["code"] == 0 and first["transformers"]  # it trained the character tokenizer
    assert second == {"code": 0, "transformers": False}
