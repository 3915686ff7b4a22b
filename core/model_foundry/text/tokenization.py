"""The core's tokenizers, trained on local text files with 🤗 ``tokenizers``.

Four kinds, each a ``train_<kind>(tokenizer_config, files)`` function registered by
:mod:`model_foundry.builtins` and returning a ``transformers.PreTrainedTokenizerFast``:

- ``bpe``: byte-level BPE (GPT-2 style); every byte is in the vocabulary, so no text is
  ever unknown and ``decode(encode(x)) == x`` for any string;
- ``wordpiece``: WordPiece (BERT style); splits on whitespace and punctuation, so decoding
  gives the words back joined by single spaces;
- ``unigram`` (alias ``sentencepiece``): Unigram LM with ``▁`` marking spaces (SentencePiece
  style); lossless for characters seen in training;
- ``char``: one token per Unicode code point, whitespace included; the vocabulary is the most
  frequent characters of the training text.

Every tokenizer has the seven special-token roles (pad, unk, bos, eos, cls, sep, mask), so any
tokenizer can feed any objective: ``cls``/``bos`` and ``sep``/``eos`` share a token unless the
config sets both. Special tokens take the first ids. No Unicode normalisation besides the
optional lowercasing: NFD/NFKC would rewrite or (with accent stripping) delete the combining
vowel signs of Devanagari and other Indic scripts.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

if TYPE_CHECKING:  # transformers is imported where a tokenizer is trained or wrapped: 0.6 s
    from transformers import PreTrainedTokenizerFast

from model_foundry.errors import ConfigError, FoundryError, Problem
from model_foundry.text.config import SPECIAL_TOKEN_ROLES, TokenizerConfig

# Ids 0.. go to the special tokens in this order (the seed reserves the first ids for them).
_ID_ORDER = ("pad_token", "unk_token", "cls_token", "sep_token", "bos_token", "eos_token", "mask_token")
_WORDPIECE_SPECIALS = {
    "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
}
_SENTENCE_SPECIALS = {
    "pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>",
}
# A role left unset borrows its twin's token: BERT's [CLS]/[SEP] double as bos/eos, <s>/</s> as cls/sep.
_TWINS = {"bos_token": "cls_token", "cls_token": "bos_token", "eos_token": "sep_token", "sep_token": "eos_token"}
_CHUNK_CHARS = 1 << 20
_LINE_CHARS = 4096  # the longest line a trainer is given; longer ones are cut (see _bounded_lines)
_CHARACTER = r"[\s\S]"  # the char kind's pre-tokenizer: any one character


def special_tokens(tokenizer_config: TokenizerConfig, defaults: dict[str, str]) -> dict[str, str]:
    """Every special-token role mapped to its token: the config's choices over ``defaults``."""
    problems = [Problem(message, f"tokenizer.{key}") for key, message in tokenizer_config.validate()]
    if problems:
        raise ConfigError(problems)
    tokens = {**defaults, **(tokenizer_config.special_tokens or {})}
    for role, twin in _TWINS.items():
        if role not in tokens:
            tokens[role] = tokens[twin]
    assert set(tokens) == set(SPECIAL_TOKEN_ROLES), "defaults must cover unk, pad, mask and one of each twin pair"
    return {role: tokens[role] for role in _ID_ORDER}


def train_bpe(tokenizer_config: TokenizerConfig, files: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style): needs ``vocab_size`` of at least 256 bytes plus the specials."""
    tokens = special_tokens(tokenizer_config, _SENTENCE_SPECIALS)
    backend = Tokenizer(models.BPE())
    backend.normalizer = _normalizer(tokenizer_config)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=tokenizer_config.vocab_size,
        min_frequency=tokenizer_config.min_frequency,
        special_tokens=_unique(tokens.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    _train(backend, trainer, files)
    return _wrap(backend, tokens, tokenizer_config)


def train_wordpiece(tokenizer_config: TokenizerConfig, files: list[str]) -> PreTrainedTokenizerFast:
    """WordPiece (BERT style), with the BERT template ``[CLS] A [SEP]`` when special tokens are added."""
    tokens = special_tokens(tokenizer_config, _WORDPIECE_SPECIALS)
    backend = Tokenizer(models.WordPiece(unk_token=tokens["unk_token"]))
    # strip_accents=False: BERT's default strips accents whenever it lowercases, and its NFD +
    # "drop combining marks" deletes Devanagari vowel signs (matras).
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=tokenizer_config.lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=tokenizer_config.vocab_size,
        min_frequency=tokenizer_config.min_frequency,
        special_tokens=_unique(tokens.values()),
        show_progress=False,
    )
    _train(backend, trainer, files)
    cls, sep = tokens["cls_token"], tokens["sep_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )
    return _wrap(backend, tokens, tokenizer_config)


def train_unigram(tokenizer_config: TokenizerConfig, files: list[str]) -> PreTrainedTokenizerFast:
    """Unigram LM (SentencePiece style); ``min_frequency`` does not apply (pieces are pruned by likelihood)."""
    tokens = special_tokens(tokenizer_config, _SENTENCE_SPECIALS)
    backend = Tokenizer(models.Unigram())
    backend.normalizer = _normalizer(tokenizer_config)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=tokenizer_config.vocab_size,
        special_tokens=_unique(tokens.values()),
        unk_token=tokens["unk_token"],
        show_progress=False,
    )
    try:
        _train(backend, trainer, files)
    except Exception as exc:  # the Rust trainer raises a bare Exception
        if "not large enough" not in str(exc):
            raise
        raise _too_small(tokenizer_config, needed=None) from exc
    return _wrap(backend, tokens, tokenizer_config)


def train_char(tokenizer_config: TokenizerConfig, files: list[str]) -> PreTrainedTokenizerFast:
    """One token per character (whitespace included): the most frequent characters up to ``vocab_size``."""
    tokens = special_tokens(tokenizer_config, _SENTENCE_SPECIALS)
    specials = _unique(tokens.values())
    room = tokenizer_config.vocab_size - len(specials)
    if room < 1:
        raise _too_small(tokenizer_config, needed=len(specials) + 1)
    normalizer = _normalizer(tokenizer_config)
    counts: Counter[str] = Counter()
    for chunk in _read_text(files):
        counts.update(normalizer.normalize_str(chunk) if normalizer else chunk)
    if not any(not char.isspace() for char in counts):
        raise FoundryError(_no_text(files))
    frequent = [
        char for char, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if count >= tokenizer_config.min_frequency and char not in specials
    ]
    vocab = {token: index for index, token in enumerate(specials + frequent[:room])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=tokens["unk_token"]))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_CHARACTER), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    return _wrap(backend, tokens, tokenizer_config)


def tokenizer_from_config(
    tokenizer_config: TokenizerConfig, files: Iterable[str | os.PathLike[str]]
) -> PreTrainedTokenizerFast:
    """The tokenizer a ``tokenizer`` section asks for: loaded from ``path`` when set, else trained on ``files``."""
    from model_foundry.factory import load_tokenizer, train_tokenizer

    if tokenizer_config.path is not None:
        return load_tokenizer(tokenizer_config.path)
    return train_tokenizer(tokenizer_config, files)


# --- a saved tokenizer without transformers ----------------------------------------------------

# The order of transformers' ``all_special_tokens`` (PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES).
_SPECIAL_ORDER = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class SavedTokenizer:
    """A tokenizer directory written by ``save_pretrained``, read with the ``tokenizers`` library alone.

    It has what a training run asks of its tokenizer: ``len()``, the seven special tokens and
    their ids, ``all_special_tokens`` / ``all_special_ids``, the ``backend_tokenizer`` that
    encodes the data, and ``save_pretrained`` (which writes the saved files again). Importing
    transformers for those took 0.6 s of a cached run's 0.74 s start-up. Anything else
    (``tokenizer(text)``, ``decode``, ``pad``, ...) comes from transformers'
    ``PreTrainedTokenizerFast`` of the same directory, loaded on first use.
    """

    def __init__(self, directory: str, files: dict[str, bytes], backend: Tokenizer, special_tokens: dict[str, str]):
        self.directory = directory
        self.files = files  # name -> content: save_pretrained writes them even if the directory goes away
        self.backend_tokenizer = backend
        self.special_tokens_map = special_tokens
        for role, token in special_tokens.items():
            setattr(self, role, token)
            setattr(self, f"{role}_id", backend.token_to_id(token))
        self.all_special_tokens = _unique(special_tokens[role] for role in _SPECIAL_ORDER)
        self.all_special_ids = [backend.token_to_id(token) for token in self.all_special_tokens]

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> tuple[str, ...]:
        """Write the tokenizer's files into ``directory``, as ``save_pretrained`` wrote them; their paths."""
        os.makedirs(directory, exist_ok=True)
        paths = []
        for name, content in self.files.items():
            paths.append(os.path.join(directory, name))
            with open(paths[-1], "wb") as handle:
                handle.write(content)
        return tuple(paths)

    @cached_property
    def transformers_tokenizer(self) -> PreTrainedTokenizerFast:
        """The same tokenizer as transformers loads it (imports transformers)."""
        from model_foundry.factory import load_tokenizer

        return load_tokenizer(self.directory)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy and pickle probing: not transformers' business
            raise AttributeError(name)
        return getattr(self.transformers_tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.transformers_tokenizer(*args, **kwargs)


def read_saved_tokenizer(directory: str) -> SavedTokenizer | PreTrainedTokenizerFast:
    """The tokenizer ``save_pretrained`` wrote to ``directory``: a :class:`SavedTokenizer` where its
    ``tokenizer_config.json`` names the seven special tokens as plain strings of the vocabulary and
    no others (every tokenizer the core trains), else transformers' own load."""
    files: dict[str, bytes] = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as handle:
            files[name] = handle.read()
    settings = json.loads(files.get("tokenizer_config.json", b"{}"))
    roles = {role: settings.get(role) for role in _ID_ORDER}
    plain = all(isinstance(token, str) for token in roles.values()) and not any(
        settings.get(key) for key in ("additional_special_tokens", "extra_special_tokens")
    )
    if plain and "tokenizer.json" in files:
        backend = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
        if all(backend.token_to_id(token) is not None for token in roles.values()):
            return SavedTokenizer(directory, files, backend, roles)
    from model_foundry.factory import load_tokenizer

    return load_tokenizer(directory)


# --- encoding long texts in pieces ---------------------------------------------------------------


def splits_at_spaces(backend: Tokenizer) -> bool:
    """Whether ``backend`` encodes a text cut just before a space that follows a non-space character
    into the same ids, piece after piece, as the whole text.

    True of the four kinds trained here and of any tokenizer with one of their normalizers and
    pre-tokenizers: GPT-2's byte-level regex starts a new piece at such a space (a space after
    whitespace may instead end a run of whitespace) and looks neither back nor past the end of a
    word; BERT's pre-tokenizer splits at every space; Metaspace
    splits before every space and prepends no ``▁`` to a piece that starts with one; the char kind
    isolates every character; lowercasing and BERT's normaliser work character by character. An
    added token that holds a space or strips the spaces after it could straddle a cut: refused, as
    are truncation and padding (each piece would be cut or padded).
    """
    if backend.truncation is not None or backend.padding is not None:
        return False
    if any(token.rstrip or any(c.isspace() for c in token.content) for token in backend.get_added_tokens_decoder().values()):
        return False
    normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else {"type": None}
    pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {"type": None}
    return normalizer["type"] in (None, "Lowercase", "BertNormalizer") and (
        (pre["type"] == "ByteLevel" and pre["use_regex"])
        or pre["type"] == "BertPreTokenizer"
        or (pre["type"] == "Metaspace" and pre["split"])
        or (pre["type"] == "Split" and pre["pattern"] == {"Regex": _CHARACTER} and pre["behavior"] == "Isolated")
    )


def _normalizer(tokenizer_config: TokenizerConfig) -> normalizers.Normalizer | None:
    return normalizers.Lowercase() if tokenizer_config.lowercase else None


def _train(backend: Tokenizer, trainer: trainers.Trainer, files: list[str]) -> None:
    if not any(chunk.strip() for chunk in _read_text(files)):
        raise FoundryError(_no_text(files))
    backend.train_from_iterator(_bounded_lines(files), trainer)


def _bounded_lines(files: list[str]) -> Iterator[str]:
    """The files' lines (with their line breaks), each over-long one cut into pieces of at most
    :data:`_LINE_CHARS`: the trainers' time and memory grow faster than linearly with the length of a
    line without whitespace (a 20 MB one kept BPE training busy for minutes and a 50 MB one took 6-7 GB)."""
    rest = ""
    for chunk in _read_text(files):
        lines = (rest + chunk).splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        for line in lines:
            yield from _pieces(line)
        if len(rest) > _LINE_CHARS:
            *done, rest = _pieces(rest)
            yield from done
    yield from _pieces(rest)


def _pieces(line: str) -> list[str]:
    return [line[start:start + _LINE_CHARS] for start in range(0, len(line), _LINE_CHARS)]


def _read_text(files: list[str]) -> Iterator[str]:
    """The files' text in chunks; unreadable files are user errors."""
    if not files:
        raise FoundryError("no tokenizer training files given (set data.train_files, or tokenizer.path to load one)")
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                while chunk := handle.read(_CHUNK_CHARS):
                    yield chunk
        except (OSError, UnicodeDecodeError) as exc:
            raise FoundryError(f"cannot read tokenizer training file {os.fspath(path)!r}: {exc}") from exc


def _no_text(files: list[str]) -> str:
    return f"the tokenizer training files contain no text: {', '.join(map(os.fspath, files))}"


def _unique(tokens: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(tokens))


def _too_small(tokenizer_config: TokenizerConfig, needed: int | None) -> FoundryError:
    kind, size = tokenizer_config.tokenizer_type, tokenizer_config.vocab_size
    need = f"{needed} entries" if needed is not None else "one entry per distinct character besides them"
    return FoundryError(
        f"tokenizer.vocab_size {size} is too small for a {kind} tokenizer on these files: its special tokens "
        f"and alphabet need {need}; raise tokenizer.vocab_size"
    )


def _wrap(backend: Tokenizer, tokens: dict[str, str], tokenizer_config: TokenizerConfig) -> PreTrainedTokenizerFast:
    if backend.get_vocab_size() > tokenizer_config.vocab_size:
        # BPE and WordPiece trainers keep the whole alphabet even when it overflows vocab_size.
        raise _too_small(tokenizer_config, needed=backend.get_vocab_size())
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=tokenizer_config.model_max_length,
        clean_up_tokenization_spaces=False,
        **tokens,
    )
