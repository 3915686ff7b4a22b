"""Text data for training: find the files, tokenize them once, keep the token ids on disk.

The ``data`` section names training files (plain text or JSONL, globs allowed; relative
paths resolve against the current working directory) and either validation files or a
``validation_fraction`` of training documents to hold out. Documents are tokenized in
batches with the tokenizer's fast Rust encoder (on all cores; a long document is cut into
pieces where that changes no id, so it is encoded in parallel too), an end-of-text token is
appended to each, and the ids are written once to a cache directory as a flat binary array
(``tokens.bin`` plus ``meta.json``), read back as a numpy memmap and cut into ``block_size``
blocks.

A cache entry is keyed by the files (absolute path, size, modification time), the options
that change which text is read, and the tokenizer's own JSON, so a second run with the same
data and tokenizer starts without tokenizing anything. Entries are written atomically.
A trained tokenizer is cached the same way, keyed by the training files and the tokenizer
section, and read back with the ``tokenizers`` library alone (no transformers import).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import random
import re
import tempfile
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from model_foundry import __version__
from model_foundry.checkpoint import atomic_directory
from model_foundry.datasets import DataContext, LoadedData
from model_foundry.datasets.files import file_stamps, fingerprint
from model_foundry.errors import ConfigError, FoundryError, Problem
from model_foundry.fields import unstructure
from model_foundry.text.config import TextDataConfig, TokenizerConfig

CACHE_FORMAT = 1
ENCODE_BATCH_DOCUMENTS = 1000
PIECE_CHARS = 1 << 15  # a longer document is encoded as pieces of about this many characters, in parallel
TOKENS_FILE = "tokens.bin"
HELD_OUT_FILE = "held_out.bin"
META_FILE = "meta.json"


# --- finding and reading files --------------------------------------------------------------


def resolve_files(patterns: Sequence[str], key: str) -> list[str]:
    """Expand globs (relative to the working directory) into existing, non-empty files, in order.

    ``key`` is the config key the patterns come from (``data.train_files``), for messages.
    """
    files: list[str] = []
    problems = []
    for index, pattern in enumerate(patterns):
        where = f"{key}[{index}]"
        if glob.has_magic(pattern):
            matches = [m for m in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)) if os.path.isfile(m)]
            if not matches:
                problems.append(Problem(f"no file matches {pattern!r} (relative to {os.getcwd()})", where))
        else:
            matches = [os.path.expanduser(pattern)]
        for path in matches:
            if not os.path.exists(path):
                problems.append(Problem(f"data file not found: {path!r} (relative paths start at {os.getcwd()})", where))
            elif os.path.isdir(path):
                problems.append(Problem(f"{path!r} is a directory; use a glob such as '{path.rstrip('/')}/*.txt'", where))
            elif os.path.getsize(path) == 0:
                problems.append(Problem(f"data file {path!r} is empty", where))
            else:
                files.append(os.path.abspath(path))
    if problems:
        raise ConfigError(problems)
    return list(dict.fromkeys(files))


def file_format(path: str, data: TextDataConfig) -> str:
    if data.format != "auto":
        return data.format
    return "jsonl" if path.endswith((".jsonl", ".json")) else "text"


def read_documents(path: str, data: TextDataConfig) -> Iterator[str]:
    """The documents of one file: lines, the whole file, or a JSONL field; raises if there are none."""
    count = 0
    try:
        with open(path, encoding="utf-8") as handle:
            if file_format(path, data) == "jsonl":
                documents: Iterable[str] = _jsonl_documents(handle, path, data.text_field)
            elif data.document_per_line:
                documents = (line.rstrip("\r\n") for line in handle if not line.isspace())
            else:
                documents = (text for text in [handle.read()] if text.strip())
            for document in documents:
                count += 1
                yield document
    except UnicodeDecodeError as exc:
        raise FoundryError(f"data file {path!r} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise FoundryError(f"cannot read data file {path!r}: {exc}") from None
    if count == 0:
        raise FoundryError(f"data file {path!r} holds no text")


def _jsonl_documents(handle: Iterable[str], path: str, field: str) -> Iterator[str]:
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FoundryError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or field not in record:
            raise FoundryError(f"{path}:{number}: no {field!r} field (set data.text_field to the field holding the text)")
        text = record[field]
        if not isinstance(text, str):
            raise FoundryError(f"{path}:{number}: field {field!r} is {type(text).__name__}, expected a string")
        if text.strip():
            yield text


# --- tokenizing ------------------------------------------------------------------------------


def separator_id(tokenizer: Any) -> int:
    """The token placed between documents: eos, or sep for tokenizers that have no eos."""
    for candidate in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if candidate is not None:
            return int(candidate)
    raise FoundryError("the tokenizer has neither an eos nor a sep token to separate documents; add one to tokenizer.special_tokens")


def token_dtype(tokenizer: Any) -> np.dtype:
    return np.dtype(np.uint16) if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def encode_documents(tokenizer: Any, documents: Iterable[str], dtype: np.dtype | None = None) -> Iterator[np.ndarray]:
    """Token ids of ``documents``, each followed by the separator, as flat arrays (one per batch).

    The tokenizers library encodes a batch on all cores (unless ``TOKENIZERS_PARALLELISM=false``).
    A document longer than :data:`PIECE_CHARS` (a whole file, with ``document_per_line: false``) is
    cut into pieces where the tokenizer gives the same ids (see :func:`document_pieces`), so that
    it is encoded in parallel as well.
    """
    from model_foundry.text.tokenization import splits_at_spaces

    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # no offsets: faster
    cut = document_pieces if splits_at_spaces(backend) else lambda document: [document]
    dtype = dtype or token_dtype(tokenizer)
    separator = (separator_id(tokenizer),)
    iterator = iter(documents)
    while batch := list(itertools.islice(iterator, ENCODE_BATCH_DOCUMENTS)):
        pieces = [cut(document) for document in batch]
        encodings = iter(encode([piece for parts in pieces for piece in parts], add_special_tokens=False))
        ids = itertools.chain.from_iterable(
            part for parts in pieces for part in (*(next(encodings).ids for _ in parts), separator)
        )
        yield np.fromiter(ids, dtype=dtype)


# Where the tokenizers of splits_at_spaces give the same ids cut as uncut: before a space that follows a non-space.
_PIECE_START = re.compile(r"(?<=\S) ")


def document_pieces(document: str) -> list[str]:
    """``document`` cut into pieces of at least :data:`PIECE_CHARS` characters (the last may be shorter),
    each cut just before a space that follows a non-space character; one piece if it has no such space."""
    pieces, start = [], 0
    while len(document) - start > PIECE_CHARS and (cut := _PIECE_START.search(document, start + PIECE_CHARS)):
        pieces.append(document[start : cut.start()])
        start = cut.start()
    pieces.append(document[start:])
    return pieces


def tokenize_to_array(tokenizer: Any, documents: Iterable[str]) -> np.ndarray:
    """All token ids of ``documents`` in memory (for evaluation files; training data goes through the cache)."""
    parts = list(encode_documents(tokenizer, documents))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=token_dtype(tokenizer))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what decides token ids: the tokenizer's JSON without padding/truncation settings."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("padding", None)
    spec.pop("truncation", None)
    return fingerprint(spec)


# --- blocks ----------------------------------------------------------------------------------


class TokenBlocks:
    """Consecutive ``block_size`` windows over a flat array of token ids (the tail is dropped)."""

    def __init__(self, tokens: np.ndarray, block_size: int):
        self.tokens = tokens
        self.block_size = block_size

    def __len__(self) -> int:
        return len(self.tokens) // self.block_size

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.block_size
        return self.tokens[start : start + self.block_size]

    @property
    def num_tokens(self) -> int:
        return len(self) * self.block_size

    def batch(self, indices: Sequence[int]) -> list[dict[str, list[int]]]:
        """The blocks at ``indices`` as examples for a text collator."""
        return [{"input_ids": self[int(i)].tolist()} for i in indices]


# --- the cache -------------------------------------------------------------------------------


def _tokenize_entry(
    directory: str, files: Sequence[str], data: TextDataConfig, tokenizer: Any, held_out_fraction: float, key: str
) -> None:
    """Tokenize ``files`` into a cache entry, holding out ``held_out_fraction`` of the documents.

    Held-out documents are spread evenly (one every ``1 / fraction``, from a seeded offset), so
    the share is exact even for a few documents and the corpus streams through without being
    held in memory.
    """
    dtype = token_dtype(tokenizer)
    position = random.Random(data.seed).random()
    names = (TOKENS_FILE, HELD_OUT_FILE)
    documents = {name: 0 for name in names}
    tokens = {name: 0 for name in names}
    pending: dict[str, list[str]] = {name: [] for name in names}
    with atomic_directory(directory) as staging, contextlib.ExitStack() as stack:
        outputs = {name: stack.enter_context(open(os.path.join(staging, name), "wb")) for name in names}

        def flush(name: str) -> None:
            for array in encode_documents(tokenizer, pending[name], dtype):
                array.tofile(outputs[name])
                tokens[name] += len(array)
            pending[name].clear()

        for path in files:
            for document in read_documents(path, data):
                crossed = int(position + held_out_fraction) > int(position)
                position += held_out_fraction
                name = HELD_OUT_FILE if crossed else TOKENS_FILE
                pending[name].append(document)
                documents[name] += 1
                if len(pending[name]) >= ENCODE_BATCH_DOCUMENTS:
                    flush(name)
        for name in names:
            flush(name)
            outputs[name].close()
        if held_out_fraction > 0:
            for name, label in ((TOKENS_FILE, "training"), (HELD_OUT_FILE, "validation")):
                if documents[name] == 0:
                    raise FoundryError(
                        f"the {label} split is empty: {sum(documents.values())} document(s) with "
                        f"data.validation_fraction {held_out_fraction}; give data.validation_files, change the "
                        "fraction, or split the text into more documents (data.document_per_line)"
                    )
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "dtype": dtype.name,
            "tokens": tokens[TOKENS_FILE],
            "held_out_tokens": tokens[HELD_OUT_FILE],
            "documents": documents[TOKENS_FILE],
            "held_out_documents": documents[HELD_OUT_FILE],
            "files": list(files),
        }
        with open(os.path.join(staging, META_FILE), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)


def _open_entry(directory: str) -> tuple[np.ndarray, np.ndarray | None]:
    with open(os.path.join(directory, META_FILE), encoding="utf-8") as handle:
        meta = json.load(handle)
    dtype = np.dtype(meta["dtype"])

    def mapped(name: str, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(os.path.join(directory, name), dtype=dtype, mode="r", shape=(count,))

    held = mapped(HELD_OUT_FILE, meta["held_out_tokens"]) if meta["held_out_tokens"] else None
    return mapped(TOKENS_FILE, meta["tokens"]), held


def cached_tokens(
    files: Sequence[str], data: TextDataConfig, tokenizer: Any, cache_dir: str, held_out_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Token ids of ``files`` (and of the held-out documents), from the cache or tokenized into it.

    Returns ``(tokens, held_out_or_None, was_cached)``.
    """
    key = fingerprint(
        {
            "format": CACHE_FORMAT,
            "files": file_stamps(files),
            "read": [data.format, data.text_field, data.document_per_line],
            "held_out": [held_out_fraction, data.seed] if held_out_fraction > 0 else None,
            "tokenizer": tokenizer_fingerprint(tokenizer),
        }
    )
    directory = os.path.join(cache_dir, f"tokens-{key}")
    was_cached = os.path.isfile(os.path.join(directory, META_FILE))
    if not was_cached:
        _tokenize_entry(directory, files, data, tokenizer, held_out_fraction, key)
    tokens, held_out = _open_entry(directory)
    return tokens, held_out, was_cached


def load_text_dataset(data: TextDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``text`` (see :mod:`model_foundry.datasets`): token blocks, cached."""
    if context.tokenizer is None:
        raise FoundryError("text data needs a tokenizer to turn it into token ids (a bug in the caller)")
    return load_text_data(data, context.tokenizer, context.cache_dir)


def load_text_data(data: TextDataConfig, tokenizer: Any, cache_dir: str) -> LoadedData:
    """Training and validation blocks for a ``data`` section, through the token cache."""
    train_files = resolve_files(data.train_files, "data.train_files")
    validation_files = resolve_files(data.validation_files, "data.validation_files")
    fraction = 0.0 if validation_files else data.validation_fraction
    train, held_out, hit = cached_tokens(train_files, data, tokenizer, cache_dir, fraction)
    hits = int(hit)
    if validation_files:
        held_out, _, hit = cached_tokens(validation_files, data, tokenizer, cache_dir)
        hits += int(hit)
    blocks = TokenBlocks(train, data.block_size)
    if len(blocks) == 0:
        raise ConfigError(
            Problem(f"the training data has {len(train)} tokens, fewer than one block; lower it or add text", "data.block_size")
        )
    validation = TokenBlocks(held_out, data.block_size) if held_out is not None else None
    if validation is not None and len(validation) == 0:
        raise ConfigError(
            Problem(
                f"the validation data has {len(held_out)} tokens, fewer than one block of {data.block_size}; "
                "add validation text or lower data.block_size",
                "data.block_size",
            )
        )
    return LoadedData(
        modality="text", train=blocks, validation=validation, unit="tokens", units_per_example=data.block_size,
        cache_hits=hits,
    )


# --- the tokenizer ---------------------------------------------------------------------------


def obtain_tokenizer(tokenizer_config: TokenizerConfig, data: TextDataConfig, cache_dir: str) -> Any:
    """The run's tokenizer: loaded from ``tokenizer.path``, or trained on the training files and cached
    (read back as a :class:`~model_foundry.text.tokenization.SavedTokenizer`, without transformers)."""
    from model_foundry.text.tokenization import read_saved_tokenizer, tokenizer_from_config

    if tokenizer_config.path is not None:
        return tokenizer_from_config(tokenizer_config, [])
    files = resolve_files(data.train_files, "data.train_files")
    key = fingerprint(
        {
            "format": CACHE_FORMAT,
            "files": file_stamps(files),
            "read": [data.format, data.text_field, data.document_per_line],
            "tokenizer": unstructure(tokenizer_config),
            "core": __version__,  # the trainers may change between versions
        }
    )
    directory = os.path.join(cache_dir, f"tokenizer-{key}")
    if os.path.isfile(os.path.join(directory, "tokenizer.json")):
        return read_saved_tokenizer(directory)
    if all(file_format(path, data) == "text" for path in files):
        tokenizer = tokenizer_from_config(tokenizer_config, files)
    else:
        # The trainers read plain text: give them the JSONL text fields, one document per line.
        with tempfile.TemporaryDirectory() as scratch:
            text_file = os.path.join(scratch, "documents.txt")
            with open(text_file, "w", encoding="utf-8") as handle:
                for path in files:
                    for document in read_documents(path, data):
                        handle.write(document.replace("\n", " ") + "\n")
            tokenizer = tokenizer_from_config(tokenizer_config, [text_file])
    with atomic_directory(directory) as staging:
        tokenizer.save_pretrained(staging)
    return read_saved_tokenizer(directory)  # as the next run reads it, so both key the token cache alike
