"""The text modality's config sections: ``tokenizer``, and ``data`` of kind ``text``.

A tokenizer belongs to text only: a config whose data is of another modality and that has a
``tokenizer`` section is a located error.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import attrs

from model_foundry.errors import did_you_mean
from model_foundry.fields import in_range, option, positive, probability

SPECIAL_TOKEN_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token", "mask_token")


@attrs.frozen
class TokenizerConfig:
    """How to get a tokenizer: train one on the data, or load a saved one from ``path``."""

    tokenizer_type: str = option("bpe", doc="tokenizer kind: bpe, wordpiece, unigram, char (see `foundry plugins`)")
    # The Rust trainers abort the process (no exception) on absurd sizes such as 1e12; 2**24 is far above any real vocabulary.
    vocab_size: int = option(8000, doc="target vocabulary size when training (at most 2**24)", validator=in_range(1, 2**24))
    special_tokens: Optional[dict[str, str]] = option(
        None, doc="special tokens by role (bos_token, eos_token, unk_token, pad_token, cls_token, sep_token, mask_token)"
    )
    min_frequency: int = option(2, doc="drop merges/pieces seen fewer times than this", validator=positive)
    lowercase: bool = option(False, doc="lowercase text before tokenizing")
    path: Optional[str] = option(None, doc="load a saved tokenizer directory instead of training one")
    model_max_length: int = option(1024, doc="longest sequence the tokenizer reports", validator=positive)

    def validate(self):
        for role, token in (self.special_tokens or {}).items():
            if role not in SPECIAL_TOKEN_ROLES:
                hint = did_you_mean(role, SPECIAL_TOKEN_ROLES) or f"; roles: {', '.join(SPECIAL_TOKEN_ROLES)}"
                yield f"special_tokens.{role}", f"unknown special token role {role!r}{hint}"
            elif not token:
                yield f"special_tokens.{role}", "must not be empty"


@attrs.frozen
class TextDataConfig:
    """``data`` of kind ``text``: where the text comes from and how it is cut into training blocks."""

    train_files: list[str] = option(
        factory=list, doc="training files: plain text or JSONL (globs allowed; relative paths start at the working directory)"
    )
    validation_files: list[str] = option(factory=list, doc="validation files; empty means split off validation_fraction")
    validation_fraction: float = option(0.05, doc="share of training documents held out when no validation_files", validator=probability)
    format: Literal["auto", "text", "jsonl"] = option("auto", doc="file format; auto picks jsonl for .jsonl/.json files")
    text_field: str = option("text", doc="JSONL field holding the text")
    document_per_line: bool = option(True, doc="plain text: each non-empty line is a document (else each file is one)")
    block_size: int = option(128, doc="tokens per training block", validator=positive)
    cache_dir: Optional[str] = option(None, doc="where tokenized data is cached (default: .foundry-cache next to output_dir)")
    seed: int = option(0, doc="seed of the validation split")

    def validate(self):
        if not self.train_files:
            yield "train_files", "needs at least one training file"


def has_vocabulary(config: Any) -> bool:
    """Whether a model config (a ``ModelConfig``) is token-level: its config class declares ``vocab_size`` (the text
    branch of the protocol; ``None`` there means the tokenizer's size)."""
    return "vocab_size" in attrs.fields_dict(type(config.params))
