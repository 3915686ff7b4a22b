"""The core's ``training`` section.

(The ``model`` section belongs to the architecture's plugin, see
:class:`model_foundry.config.ModelConfig`; ``data`` to a dataset kind and ``tokenizer`` to
the text modality, see :mod:`model_foundry.text.config`.) Choices that plugins can extend,
such as ``training.objective``, are strings checked against the registry by
:mod:`model_foundry.config`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import attrs

from model_foundry.fields import finite, in_range, non_negative, option, positive, probability, unit_interval


@attrs.frozen
class OptimizerConfig:
    """One parameter group's AdamW settings (``training.optimizers.<group>``); unset: training's own."""

    learning_rate: Optional[float] = option(None, doc="peak learning rate", validator=[positive, finite])
    weight_decay: Optional[float] = option(
        None, doc="AdamW weight decay (not applied to biases and norms)", validator=[non_negative, finite],
    )
    adam_beta1: Optional[float] = option(None, doc="AdamW beta1", validator=probability)
    adam_beta2: Optional[float] = option(None, doc="AdamW beta2", validator=probability)


@attrs.frozen
class TrainingConfig:
    """The training loop: objective, optimisation, schedule, logging and checkpoints."""

    objective: Optional[str] = option(
        None, doc="the collator that makes batches (causal_lm, masked_lm, ...); null: the architecture's first objective, "
        "or the modality's own collator",
    )
    mlm_probability: float = option(0.15, doc="share of tokens selected for masking (masked_lm, hybrid)", validator=probability)
    collator_options: dict[str, Any] = option(factory=dict, doc="more keyword options for the collator's factory")
    max_steps: int = option(1000, doc="optimizer steps to train for", validator=positive)
    batch_size: int = option(16, doc="blocks per micro-batch on each process", validator=positive)
    gradient_accumulation_steps: int = option(1, doc="micro-batches per optimizer step", validator=positive)
    learning_rate: float = option(3e-4, doc="peak learning rate", validator=[positive, finite])
    weight_decay: float = option(
        0.01, doc="AdamW weight decay (not applied to biases and norms)", validator=[non_negative, finite],
    )
    adam_beta1: float = option(0.9, doc="AdamW beta1", validator=probability)
    adam_beta2: float = option(0.999, doc="AdamW beta2", validator=probability)
    optimizers: dict[str, OptimizerConfig] = option(
        factory=dict, doc="per parameter group (of models that name groups): learning_rate, weight_decay, adam_beta1, adam_beta2",
    )
    max_grad_norm: Optional[float] = option(1.0, doc="gradient clipping norm; null disables", validator=[positive, finite])
    warmup_steps: int = option(
        100, doc="linear warmup steps (may exceed max_steps: the warmup then never completes)", validator=non_negative,
    )
    lr_scheduler: Literal["cosine", "linear", "constant"] = option("cosine", doc="decay after warmup")
    min_lr_ratio: float = option(
        0.1, doc="the learning rate's floor as a share of the peak: cosine and linear warm up from it and decay to it",
        validator=unit_interval,
    )
    eval_every: int = option(200, doc="evaluate every N steps (0 disables)", validator=non_negative)
    eval_batches: Optional[int] = option(None, doc="validation batches per evaluation (null: all)", validator=positive)
    eval_samples: int = option(
        64, doc="samples written at each evaluation by models that can sample (0 disables)", validator=non_negative,
    )
    save_every: int = option(500, doc="write a training checkpoint every N steps (0: only at the end)", validator=non_negative)
    keep_checkpoints: int = option(2, doc="training checkpoints kept in output_dir", validator=positive)
    log_every: int = option(10, doc="log metrics every N steps", validator=positive)
    output_dir: str = option("runs/default", doc="where checkpoints, metrics and plots go")
    seed: int = option(42, doc="seed for initialisation, data order and dropout", validator=in_range(0, 2**32 - 1))
    mixed_precision: Literal["no", "fp16", "bf16"] = option("no", doc="mixed precision where the device has it")
    report_to: list[str] = option(factory=list, doc="extra trackers through Accelerate (tensorboard, wandb, ...)")
