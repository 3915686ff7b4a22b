"""The core's config sections: ``tokenizer``, ``data`` and ``training``.

(The ``model`` section belongs to the architecture's plugin; see
:class:`model_foundry.config.ModelConfig`.) Choices that plugins can extend, such as
``tokenizer.tokenizer_type`` and ``training.objective``, are strings checked against the
registry by :mod:`model_foundry.config`.
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from model_foundry.errors import did_you_mean
from model_foundry.schema import non_negative, option, positive, probability, unit_interval

SPECIAL_TOKEN_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token", "mask_token")


@attrs.frozen
class TokenizerConfig:
    """How to get a tokenizer: train one on the data, or load a saved one from ``path``."""

    tokenizer_type: str = option("bpe", doc="tokenizer kind: bpe, wordpiece, unigram, char (see `foundry plugins`)")
    vocab_size: int = option(8000, doc="target vocabulary size when training", validator=positive)
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
class DataConfig:
    """Where the text comes from and how it is cut into training blocks."""

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


@attrs.frozen
class TrainingConfig:
    """The training loop: objective, optimisation, schedule, logging and checkpoints."""

    objective: str = option("causal_lm", doc="training objective: causal_lm, masked_lm, hybrid (a collator name)")
    mlm_probability: float = option(0.15, doc="share of tokens selected for masking (masked_lm, hybrid)", validator=probability)
    max_steps: int = option(1000, doc="optimizer steps to train for", validator=positive)
    batch_size: int = option(16, doc="blocks per micro-batch on each process", validator=positive)
    gradient_accumulation_steps: int = option(1, doc="micro-batches per optimizer step", validator=positive)
    learning_rate: float = option(3e-4, doc="peak learning rate", validator=positive)
    weight_decay: float = option(0.01, doc="AdamW weight decay (not applied to biases and norms)", validator=non_negative)
    adam_beta1: float = option(0.9, doc="AdamW beta1", validator=probability)
    adam_beta2: float = option(0.999, doc="AdamW beta2", validator=probability)
    max_grad_norm: Optional[float] = option(1.0, doc="gradient clipping norm; null disables", validator=positive)
    warmup_steps: int = option(100, doc="linear warmup steps", validator=non_negative)
    lr_scheduler: Literal["cosine", "linear", "constant"] = option("cosine", doc="decay after warmup")
    min_lr_ratio: float = option(0.1, doc="final learning rate as a share of the peak", validator=unit_interval)
    eval_every: int = option(200, doc="evaluate every N steps (0 disables)", validator=non_negative)
    eval_batches: Optional[int] = option(None, doc="validation batches per evaluation (null: all)", validator=positive)
    save_every: int = option(500, doc="write a training checkpoint every N steps (0: only at the end)", validator=non_negative)
    keep_checkpoints: int = option(2, doc="training checkpoints kept in output_dir", validator=positive)
    log_every: int = option(10, doc="log metrics every N steps", validator=positive)
    output_dir: str = option("runs/default", doc="where checkpoints, metrics and plots go")
    seed: int = option(42, doc="seed for initialisation, data order and dropout")
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", doc="mixed precision where the device has it")
    report_to: list[str] = option(factory=list, doc="extra trackers through Accelerate (tensorboard, wandb, ...)")

    def validate(self):
        if self.warmup_steps > self.max_steps:
            yield "warmup_steps", f"must not exceed max_steps ({self.max_steps})"
