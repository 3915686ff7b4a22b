"""The core's tokenizers: every kind trains, round-trips Hindi and English, keeps its special tokens."""

from __future__ import annotations

import shutil
import unicodedata
from pathlib import Path

import pytest

import model_foundry
from model_foundry import ConfigError, FoundryError, load_config
from model_foundry.testing import isolated_registry
from model_foundry.text.config import SPECIAL_TOKEN_ROLES, TokenizerConfig
from model_foundry.text.tokenization import tokenizer_from_config

DATA = Path(__file__).parent / "data"
HINDI = (DATA / "hindi.txt").read_text(encoding="utf-8").splitlines()
ENGLISH = (DATA / "english.txt").read_text(encoding="utf-8").splitlines()
KINDS = ["bpe", "wordpiece", "unigram", "sentencepiece", "char"]
LOSSLESS = ["bpe", "unigram", "sentencepiece", "char"]
VOCAB_SIZES = {"bpe": 600, "wordpiece": 600, "unigram": 400, "sentencepiece": 400, "char": 300}


@pytest.fixture(autouse=True, scope="module")
def registry():
    with isolated_registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    """A Hindi file and an English one, in a fresh directory."""
    folder = tmp_path_factory.mktemp("corpus")
    return [shutil.copy(DATA / name, folder / name) for name in ("hindi.txt", "english.txt")]


def config(kind: str, **fields) -> TokenizerConfig:
    return TokenizerConfig(**{"tokenizer_type": kind, "vocab_size": VOCAB_SIZES[kind], "min_frequency": 1, **fields})


@pytest.fixture(scope="module")
def trained(corpus) -> dict:
    return {kind: model_foundry.train_tokenizer(config(kind), corpus) for kind in KINDS}


def round_trip(tokenizer, text: str) -> str:
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])


def without_whitespace(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("kind", LOSSLESS)
def test_lossless_kinds_round_trip_hindi_and_english_exactly(trained, kind):
    # Precomposed nukta letters (U+0958..U+095F) would be rewritten by NFC/NFKC normalisation.
    assert any(0x958 <= ord(char) <= 0x95F for char in "".join(HINDI))
    tokenizer = trained[kind]
    for line in HINDI + ENGLISH:
        assert round_trip(tokenizer, line) == line
    assert round_trip(tokenizer, "\n".join(HINDI[:3])) == "\n".join(HINDI[:3])


def test_wordpiece_round_trip_keeps_every_character(trained):
    # WordPiece splits on whitespace and punctuation; decoding joins pieces with single spaces.
    tokenizer = trained["wordpiece"]
    for line in HINDI + ENGLISH:
        decoded = round_trip(tokenizer, line)
        assert without_whitespace(decoded) == without_whitespace(line)
        assert tokenizer.unk_token not in decoded
    assert round_trip(tokenizer, "हिंदी भारत की राजभाषा है") == "हिंदी भारत की राजभाषा है"


@pytest.mark.parametrize("kind", KINDS)
def test_lowercasing_lowers_latin_and_keeps_devanagari_vowel_signs(corpus, kind):
    tokenizer = model_foundry.train_tokenizer(config(kind, lowercase=True), corpus)
    line = HINDI[1]
    assert any(unicodedata.category(char) in ("Mn", "Mc") for char in line)  # the matras that must survive
    assert without_whitespace(round_trip(tokenizer, line)) == without_whitespace(line)
    assert without_whitespace(round_trip(tokenizer, "The Quick Fox")) == "thequickfox"


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_defines_every_special_token_role_in_the_first_ids(trained, kind):
    tokenizer = trained[kind]
    for role in SPECIAL_TOKEN_ROLES:
        assert getattr(tokenizer, role) is not None, role
    assert sorted(set(tokenizer.all_special_ids)) == list(range(5))
    assert len(tokenizer) == tokenizer.vocab_size <= VOCAB_SIZES[kind]
    assert tokenizer.model_max_length == 1024


def test_default_special_tokens_per_kind(trained):
    assert trained["wordpiece"].special_tokens_map == {
        "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "bos_token": "[CLS]", "eos_token": "[SEP]", "mask_token": "[MASK]",
    }
    assert trained["bpe"].special_tokens_map == {
        "pad_token": "<pad>", "unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>",
        "bos_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>",
    }
    assert trained["bpe"].pad_token_id == 0


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_from_config(corpus, kind):
    chosen = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<oov>", "pad_token": "<blank>"}
    tokenizer = model_foundry.train_tokenizer(config(kind, special_tokens=chosen, model_max_length=64), corpus)
    for role, token in chosen.items():
        assert getattr(tokenizer, role) == token
    # Unset roles keep the kind's defaults; cls/sep borrow bos/eos where the kind has no cls/sep of its own.
    if kind == "wordpiece":
        assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token) == ("[CLS]", "[SEP]", "[MASK]")
    else:
        assert (tokenizer.cls_token, tokenizer.sep_token, tokenizer.mask_token) == ("<bos>", "<eos>", "<mask>")
    assert tokenizer.model_max_length == 64
    # Special tokens written in text stay whole.
    ids = tokenizer("<bos>भारत<eos>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id


def test_only_wordpiece_adds_its_template_by_default(trained):
    wordpiece = trained["wordpiece"]
    ids = wordpiece("भारत एक देश है")["input_ids"]
    assert ids[0] == wordpiece.cls_token_id and ids[-1] == wordpiece.sep_token_id
    assert ids[1:-1] == wordpiece("भारत एक देश है", add_special_tokens=False)["input_ids"]
    for kind in LOSSLESS:
        tokenizer = trained[kind]
        assert tokenizer("भारत")["input_ids"] == tokenizer("भारत", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_identical_tokenizers(trained, tmp_path, kind):
    tokenizer = trained[kind]
    tokenizer.save_pretrained(tmp_path)
    loaded = model_foundry.load_tokenizer(tmp_path)
    assert loaded.special_tokens_map == tokenizer.special_tokens_map
    assert loaded.all_special_ids == tokenizer.all_special_ids
    assert (len(loaded), loaded.model_max_length) == (len(tokenizer), tokenizer.model_max_length)
    for line in HINDI[:10] + ENGLISH:
        for specials in (True, False):
            assert loaded(line, add_special_tokens=specials) == tokenizer(line, add_special_tokens=specials)
        assert round_trip(loaded, line) == round_trip(tokenizer, line)


def test_tokenizer_from_config_loads_path_and_trains_otherwise(trained, corpus, tmp_path):
    trained["unigram"].save_pretrained(tmp_path)
    loaded = tokenizer_from_config(TokenizerConfig(tokenizer_type="char", path=str(tmp_path)), files=[])
    assert loaded.get_vocab() == trained["unigram"].get_vocab()
    fresh = tokenizer_from_config(config("char"), corpus)
    assert fresh.get_vocab() == trained["char"].get_vocab()
    with pytest.raises(FoundryError, match="no tokenizer in"):
        tokenizer_from_config(TokenizerConfig(path=str(tmp_path / "missing")), files=[])


def test_char_vocabulary_is_the_most_frequent_characters(corpus):
    text = "".join(Path(f).read_text(encoding="utf-8") for f in corpus)
    most_frequent = sorted(set(text), key=lambda char: (-text.count(char), char))[:20]
    tokenizer = model_foundry.train_tokenizer(TokenizerConfig(tokenizer_type="char", vocab_size=25), corpus)
    characters = set(tokenizer.get_vocab()) - set(tokenizer.all_special_tokens)
    assert characters == set(most_frequent)
    assert " " in characters and "\n" in characters
    rare = next(char for char in text if char not in characters)
    assert tokenizer(f"{rare} ", add_special_tokens=False)["input_ids"] == [
        tokenizer.unk_token_id, tokenizer.convert_tokens_to_ids(" ")
    ]


def test_min_frequency_drops_rare_characters(corpus):
    tokenizer = model_foundry.train_tokenizer(config("char", min_frequency=1000), corpus)
    text = "".join(Path(f).read_text(encoding="utf-8") for f in corpus)
    characters = set(tokenizer.get_vocab()) - set(tokenizer.all_special_tokens)
    assert characters == {char for char in set(text) if text.count(char) >= 1000}


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_size_too_small_is_a_clear_error(corpus, kind):
    # Five special tokens leave no room for even one character.
    with pytest.raises(FoundryError, match=f"vocab_size 5 is too small for a {kind} tokenizer"):
        model_foundry.train_tokenizer(TokenizerConfig(tokenizer_type=kind, vocab_size=5), corpus)


@pytest.mark.parametrize("kind", KINDS)
def test_missing_or_empty_training_files_are_clear_errors(tmp_path, kind):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(FoundryError, match="contain no text"):
        model_foundry.train_tokenizer(config(kind), [empty])
    with pytest.raises(FoundryError, match="not found"):
        model_foundry.train_tokenizer(config(kind), [tmp_path / "absent.txt"])
    with pytest.raises(FoundryError, match="no tokenizer training files"):
        model_foundry.train_tokenizer(config(kind), [])


def test_unknown_special_token_role_is_located(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("tokenizer:\n  special_tokens:\n    msk_token: '[MASK]'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, sections=("tokenizer",))
    assert str(info.value).startswith(f"{path}:3:")
    assert str(info.value).endswith(
        ": tokenizer.special_tokens.msk_token: unknown special token role 'msk_token'; did you mean 'mask_token'?"
    )
    with pytest.raises(ConfigError, match="tokenizer.special_tokens.pad_token: must not be empty"):
        model_foundry.train_tokenizer(config("bpe", special_tokens={"pad_token": ""}), [DATA / "hindi.txt"])
