"""The training loop behind ``foundry train``: a few hundred lines of our own on 🤗 Accelerate.

One process on the CPU by default; under ``accelerate launch`` or ``torchrun`` the same code
runs data-parallel (Accelerate wraps the model in DDP and each process reads its own share of
every batch). See docs/training.md for the outputs and the resume guarantees.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import sys
import time
from typing import Any, Callable, Mapping

import attrs
import numpy as np
import torch

from model_foundry.checkpoint import is_checkpoint, save
from model_foundry.config import FoundryConfig, ModelConfig, apply_overrides, read_yaml
from model_foundry.errors import ConfigError, FoundryError, Problem
from model_foundry.sections import TrainingConfig
from model_foundry.text.config import TextDataConfig, TokenizerConfig
from model_foundry.text.data import TokenBlocks, load_text_data, obtain_tokenizer, resolve_files
from model_foundry.training.reporting import LOSS_CURVE_FILE, METRICS_FILE, MetricsLog, Progress, plot_loss_curve
from model_foundry.training.state import (
    STATE_JSON,
    capture_rng,
    is_training_checkpoint,
    read_training_state,
    restore_rng,
    write_training_state,
)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# What atomic_directory leaves behind when a process is killed in the middle of a write.
STAGING_PATTERN = re.compile(r"^\.(checkpoint-\d+|final)\.(tmp|old)-")
FINAL_DIR = "final"
MASKING_OBJECTIVES = ("masked_lm", "hybrid")


@attrs.frozen
class StepContext:
    """What a custom training step (``foundry_training_steps``) gets besides the model and batch."""

    accelerator: Any
    optimizer: Any
    training: TrainingConfig
    step: int  # the optimizer step about to happen (1-based)


@attrs.frozen
class TrainResult:
    """The outcome of :func:`train`: the trained (unwrapped) model and where things were written."""

    model: Any
    tokenizer: Any
    step: int
    interrupted: bool
    output_dir: str
    checkpoint: str | None  # the newest training checkpoint written
    final: str | None  # output_dir/final, when training finished
    last_metrics: Mapping[str, Any]


def warn(message: str) -> None:
    """A user-facing warning on stderr (once per process: every process of a DDP run may have its own)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --- finding checkpoints ---------------------------------------------------------------------


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete training checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(output_dir, name)
        if match and is_checkpoint(path) and is_training_checkpoint(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str) -> str:
    """The newest complete training checkpoint, or a FoundryError saying there is none."""
    found = list_checkpoints(output_dir)
    if not found:
        raise FoundryError(
            f"nothing to resume: no training checkpoint (checkpoint-<step>/ with {STATE_JSON}) in {output_dir!r}; "
            "run without --resume to start training"
        )
    return found[-1][1]


# --- the data order --------------------------------------------------------------------------


class BlockOrder:
    """Which blocks each micro-batch holds: a seeded permutation per epoch, split across processes.

    A pure function of the micro-batch index, so resuming needs only the index.
    """

    def __init__(self, num_blocks: int, batch_size: int, seed: int, rank: int, world: int):
        self.num_blocks, self.batch_size, self.seed, self.rank, self.world = num_blocks, batch_size, seed, rank, world
        self.per_epoch = num_blocks // (batch_size * world)
        if self.per_epoch == 0:
            raise ConfigError(
                Problem(
                    f"the training data has {num_blocks} blocks, fewer than one batch of {batch_size} per process "
                    f"({world} process(es)); lower it, lower data.block_size or add text",
                    "training.batch_size",
                )
            )
        self._epoch, self._permutation = -1, np.arange(0)

    def indices(self, micro_batch: int) -> np.ndarray:
        epoch, offset = divmod(micro_batch, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._permutation = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        start = (offset * self.world + self.rank) * self.batch_size
        return self._permutation[start : start + self.batch_size]


def collate(collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]], blocks: TokenBlocks,
            indices: Any, device: torch.device) -> dict[str, torch.Tensor]:
    batch = collator([{"input_ids": blocks[int(i)].tolist()} for i in indices])
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


# --- optimisation ----------------------------------------------------------------------------


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices, none on biases, norms and other 1-D parameters."""
    decay, no_decay, seen = [], [], set()
    for _, parameter in model.named_parameters():
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_multiplier(training: TrainingConfig) -> Callable[[int], float]:
    """Linear warmup to the peak, then cosine/linear decay to ``min_lr_ratio`` (or constant)."""
    warmup, total, floor = training.warmup_steps, training.max_steps, training.min_lr_ratio

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if training.lr_scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if training.lr_scheduler == "cosine" else 1 - progress
        return floor + (1 - floor) * shape

    return multiplier


# --- locations for run-time config checks ----------------------------------------------------


def config_problem(config: FoundryConfig, overrides: tuple[str, ...], path: tuple[str, ...], message: str) -> ConfigError:
    """A ConfigError located at ``path`` in the config file (or the ``--set`` that gave it)."""
    return located(config, overrides, ConfigError(Problem(message, ".".join(path))))


def located(config: FoundryConfig, overrides: tuple[str, ...], error: ConfigError) -> ConfigError:
    """``error`` with every unlocated problem placed at its key in the config file (or ``--set``)."""
    if not config.path or not os.path.isfile(config.path) or all(p.location for p in error.problems):
        return error
    try:
        source = read_yaml(config.path)
        apply_overrides(source, overrides)
    except ConfigError:
        return error
    return ConfigError([
        p if p.location else attrs.evolve(p, location=source.where(_key_path(p.path)))
        for p in error.problems
    ])


def _key_path(dotted: str) -> tuple[str | int, ...]:
    """``"data.train_files[0]"`` -> ``("data", "train_files", 0)``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"\.|\[|\]", dotted) if part)


# --- the loop --------------------------------------------------------------------------------


def _sections(config: FoundryConfig) -> tuple[ModelConfig, TokenizerConfig, TextDataConfig, TrainingConfig]:
    missing = [name for name in ("model", "data", "training") if getattr(config, name) is None]
    if missing:
        raise ConfigError(Problem(f"training needs the section(s): {', '.join(missing)}; see docs/training.md"))
    return config.model, config.tokenizer or TokenizerConfig(), config.data.params, config.training


def _accelerator(training: TrainingConfig) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # Each run sets its own precision, also when one process runs several (tests, notebooks);
    # the process group (PartialState) is kept.
    AcceleratorState._reset_state()

    precision = training.mixed_precision
    if precision == "fp16" and not torch.cuda.is_available():
        warn("training.mixed_precision fp16 needs a CUDA device; training in full precision")
        precision = "no"
    trackers = _available_trackers(training.report_to)
    return Accelerator(
        cpu=not _has_accelerator_device(),  # without it Accelerate ignores torchrun's processes on a CPU-only machine
        mixed_precision=precision,
        log_with=trackers or None,
        project_dir=training.output_dir if trackers else None,
    )


def _has_accelerator_device() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(xpu and xpu.is_available()) or torch.backends.mps.is_available()


def _available_trackers(names: list[str]) -> list[str]:
    from accelerate.tracking import _available_trackers as installed  # noqa: PLC2701 (the list Accelerate checks)

    available = {str(t) for t in installed}
    missing = [name for name in names if name not in available]
    if missing:
        warn(f"training.report_to: {', '.join(missing)} not installed; skipped")
    return [name for name in names if name in available]


def _clean_output_dir(output_dir: str, afresh: bool) -> None:
    """Remove half-written checkpoints of a killed run and, when starting afresh, an earlier run's outputs."""
    doomed = [os.path.join(output_dir, name) for name in os.listdir(output_dir) if STAGING_PATTERN.match(name)]
    if afresh:
        doomed += [path for _, path in list_checkpoints(output_dir)]
        doomed += [os.path.join(output_dir, name) for name in (FINAL_DIR, METRICS_FILE, LOSS_CURVE_FILE)]
    for path in doomed:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def _with_vocab(model: ModelConfig, tokenizer: Any, config: FoundryConfig, overrides: tuple[str, ...]) -> ModelConfig:
    size = len(tokenizer)
    current = getattr(model.params, "vocab_size", "absent")
    if current is None:
        return model.evolve(vocab_size=size)
    if isinstance(current, int) and current < size:
        raise config_problem(
            config, overrides, ("model", "vocab_size"),
            f"{current} is smaller than the tokenizer's {size} tokens; set it to null to use the tokenizer's size",
        )
    return model


class _InterruptFlag:
    """Turns the first Ctrl-C into a request to checkpoint and stop; a second one stops at once."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def __enter__(self) -> "_InterruptFlag":
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.raised = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *_: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(config: FoundryConfig, resume: bool = False, overrides: tuple[str, ...] = ()) -> TrainResult:
    """Train the model a config describes; see docs/training.md.

    ``overrides`` are the ``--set`` strings already applied to ``config`` (used only to locate
    error messages). With ``resume``, continue from the newest checkpoint in ``output_dir``.
    """
    from accelerate.utils import gather_object, set_seed

    from model_foundry.factory import create_collator, create_model, load_tokenizer
    from model_foundry.plugins import get_registry
    from model_foundry.specs import resolve

    model_config, tokenizer_config, data_config, training = _sections(config)
    output_dir = os.path.abspath(training.output_dir)
    cache_dir = data_config.cache_dir or os.path.join(os.path.dirname(output_dir), ".foundry-cache")
    resume_from = latest_checkpoint(output_dir) if resume else None
    try:  # user errors before anything is written
        resolve_files(data_config.train_files, "data.train_files")
        resolve_files(data_config.validation_files, "data.validation_files")
    except ConfigError as error:
        raise located(config, overrides, error) from None

    accelerator = _accelerator(training)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    with accelerator.main_process_first():
        tokenizer = load_tokenizer(resume_from) if resume_from else obtain_tokenizer(tokenizer_config, data_config, cache_dir)
    model_config = _with_vocab(model_config, tokenizer, config, overrides)
    set_seed(training.seed)
    model = create_model(model_config)
    limit = getattr(model, "max_sequence_length", None)
    if limit is not None and data_config.block_size > limit:
        raise config_problem(
            config, overrides, ("data", "block_size"),
            f"{data_config.block_size} is longer than the model's max_sequence_length ({limit}); lower it or "
            "raise the model's position embeddings",
        )
    with accelerator.main_process_first():
        data = load_text_data(data_config, tokenizer, cache_dir)
    order = BlockOrder(len(data.train), training.batch_size, training.seed, rank, world)
    set_seed(training.seed + rank)  # different dropout masks on each process

    collator_generator = torch.Generator().manual_seed(training.seed * 1_000_003 + rank)
    masking = training.objective in MASKING_OBJECTIVES
    options = {"mlm_probability": training.mlm_probability, "generator": collator_generator} if masking else {}
    collator = create_collator(training.objective, tokenizer, **options)

    optimizer = torch.optim.AdamW(
        parameter_groups(model, training.weight_decay), lr=training.learning_rate,
        betas=(training.adam_beta1, training.adam_beta2),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(training))
    step, state = 0, {}
    if resume_from:
        from safetensors.torch import load_model

        load_model(model, os.path.join(resume_from, "model.safetensors"))
        state, optimizer_state, rng_states = read_training_state(resume_from)
        step = state["step"]
    model, optimizer = accelerator.prepare(model, optimizer)
    if resume_from:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(state["scheduler"])
        if len(rng_states) != world:
            warn(f"resuming {len(rng_states)}-process random state on {world} process(es): not bit-exact")
        restore_rng(rng_states[rank % len(rng_states)], collator_generator if masking else None)
    unwrapped = accelerator.unwrap_model(model)
    custom = get_registry().training_steps.get(model_config.architecture)
    custom_step = resolve(custom[0][0].step) if custom else None

    if main:
        os.makedirs(output_dir, exist_ok=True)
        _clean_output_dir(output_dir, afresh=not resume_from)
    metrics = MetricsLog(output_dir, step if resume_from else None) if main else None
    if training.report_to and main:
        accelerator.init_trackers(os.path.basename(output_dir), config=config.to_dict().get("training", {}))
    progress = Progress(training.max_steps, step, enabled=main)
    tokens_per_step = training.batch_size * training.gradient_accumulation_steps * data_config.block_size * world
    progress.message(
        f"training {model_config.architecture} ({unwrapped.num_parameters():,} parameters) on {len(data.train):,} blocks "
        f"of {data_config.block_size} tokens ({'cached' if data.cache_hits else 'tokenized'}), {world} process(es)"
        + (f"; resuming from {resume_from} at step {step}" if resume_from else "")
    )

    def evaluate_now() -> dict[str, Any] | None:
        if data.validation is None:
            return None
        loss_sum, count = evaluate(
            unwrapped, data.validation, eval_collator(training, tokenizer, create_collator), training.batch_size,
            accelerator.device, training.eval_batches, rank, world, autocast=accelerator.autocast,
        )
        totals = accelerator.reduce(torch.tensor([loss_sum, count], dtype=torch.float64, device=accelerator.device), "sum")
        eval_loss = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
        return {"step": step, "eval_loss": eval_loss, "perplexity": perplexity(eval_loss), "elapsed": round(elapsed(), 3)}

    def checkpoint(metrics_now: Mapping[str, Any]) -> str:
        rng = gather_object([capture_rng(collator_generator if masking else None)])
        directory = os.path.join(output_dir, f"checkpoint-{step}")
        if main:
            run_state = {
                "step": step, "micro_batches": step * training.gradient_accumulation_steps, "world_size": world,
                "elapsed": elapsed(), "window": {"sums": {k: float(v) for k, v in sums.items()}, "steps": window_steps},
                "scheduler": scheduler.state_dict(),
            }
            save(
                unwrapped, directory, tokenizer=tokenizer, metrics=metrics_now, config=config,
                extra=lambda staging: write_training_state(staging, run_state, optimizer.state_dict(), rng),
            )
            for _, old in list_checkpoints(output_dir)[: -training.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return directory

    started = time.perf_counter() - state.get("elapsed", 0.0)

    def elapsed() -> float:
        return time.perf_counter() - started

    # Sums of the step losses ("loss", and parts such as a hybrid's "clm_loss") since the last log.
    saved_window = state.get("window", {})
    sums: dict[str, Any] = dict(saved_window.get("sums", {}))
    window_steps: int = saved_window.get("steps", 0)
    window_started, last_record, last_checkpoint, interrupted = time.perf_counter(), {}, resume_from, False
    model.train()
    with _InterruptFlag() as interrupt:
        while step < training.max_steps:
            micro = step * training.gradient_accumulation_steps
            batches = [
                collate(collator, data.train, order.indices(micro + i), accelerator.device)
                for i in range(training.gradient_accumulation_steps)
            ]
            if custom_step is not None:
                merged = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
                outcome = custom_step(model, merged, StepContext(accelerator, optimizer, training, step + 1))
                losses = {k: torch.as_tensor(v).detach().float() for k, v in outcome.items() if _is_loss(k)}
            else:
                losses = _optimizer_step(model, optimizer, batches, accelerator, training.max_grad_norm)
            scheduler.step()
            step += 1
            if hasattr(unwrapped, "on_optimizer_step"):
                unwrapped.on_optimizer_step(step)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            window_steps += 1
            progress.step()
            if step % training.log_every == 0 or step == training.max_steps:
                means = {
                    key: accelerator.reduce(torch.as_tensor(total, device=accelerator.device) / window_steps, "mean").item()
                    for key, total in sorted(sums.items(), key=lambda item: item[0] != "loss")
                }
                now = time.perf_counter()
                last_record = {
                    "step": step, **means, "lr": scheduler.get_last_lr()[0],
                    "tokens_per_sec": round(tokens_per_step * window_steps / max(now - window_started, 1e-9), 1),
                    "elapsed": round(elapsed(), 3),
                }
                sums, window_steps, window_started = {}, 0, now
                _record(last_record, metrics, progress, accelerator, step)
            if training.eval_every and (step % training.eval_every == 0 or step == training.max_steps):
                record = evaluate_now()
                if record is not None:
                    _record(record, metrics, progress, accelerator, step)
                    last_record = {**last_record, **record}
            if world > 1:
                flag = accelerator.reduce(torch.tensor(float(interrupt.raised), device=accelerator.device), "sum")
                interrupt.raised = bool(flag.item())
            if interrupt.raised or step == training.max_steps or (training.save_every and step % training.save_every == 0):
                last_checkpoint = checkpoint(last_record)
            if interrupt.raised:
                interrupted = True
                break
    progress.close()
    final = None
    if main:
        if not interrupted:
            final = save(unwrapped, os.path.join(output_dir, FINAL_DIR), tokenizer=tokenizer, metrics=last_record, config=config)
        plot_loss_curve(metrics.records, os.path.join(output_dir, LOSS_CURVE_FILE))
    if training.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainResult(unwrapped, tokenizer, step, interrupted, output_dir, last_checkpoint, final, last_record)


def _is_loss(key: str) -> bool:
    return key == "loss" or key.endswith("_loss")


def _optimizer_step(model: Any, optimizer: Any, batches: list[dict[str, torch.Tensor]], accelerator: Any,
                    max_grad_norm: float | None) -> dict[str, torch.Tensor]:
    """Forward and backward over the micro-batches (syncing gradients on the last), clip, step.

    Returns the mean ``loss`` over the micro-batches, and of any other scalar ``*_loss`` the
    model reports (a hybrid's ``clm_loss`` and ``mlm_loss``), so they are logged too.
    """
    totals: dict[str, torch.Tensor] = {}
    for index, batch in enumerate(batches):
        last = index == len(batches) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            output = model(**batch)
            accelerator.backward(output.loss / len(batches))
        for key, value in output.items():
            if _is_loss(key) and torch.is_tensor(value) and value.dim() == 0:
                totals[key] = totals.get(key, 0.0) + value.detach().float()
    if max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {key: total / len(batches) for key, total in totals.items()}


def _record(record: Mapping[str, Any], metrics: MetricsLog | None, progress: Progress, accelerator: Any, step: int) -> None:
    if metrics is not None:
        metrics.write(record)
    progress.record(record)
    if accelerator.trackers:
        accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def eval_collator(training: TrainingConfig, tokenizer: Any, create_collator: Callable[..., Any]) -> Any:
    """A collator for evaluation; masking draws from its own fixed-seed generator, so every
    evaluation masks the same positions and training's random streams are untouched."""
    if training.objective not in MASKING_OBJECTIVES:
        return create_collator(training.objective, tokenizer)
    generator = torch.Generator().manual_seed(training.seed)
    return create_collator(training.objective, tokenizer, mlm_probability=training.mlm_probability, generator=generator)


@torch.no_grad()
def evaluate(
    model: Any, blocks: TokenBlocks, collator: Any, batch_size: int, device: Any, max_batches: int | None = None,
    rank: int = 0, world: int = 1, autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[float, int]:
    """``(sum of loss × label tokens, label tokens)`` over this process's share of ``blocks``."""
    was_training = model.training
    model.eval()
    loss_sum, count = 0.0, 0
    batches = range(0, len(blocks), batch_size)
    for number, start in enumerate(batches):
        if max_batches is not None and number >= max_batches:
            break
        if number % world != rank:
            continue
        batch = collate(collator, blocks, range(start, min(start + batch_size, len(blocks))), device)
        with autocast():
            loss = model(**batch).loss
        tokens = int((batch["labels"] != -100).sum())
        loss_sum += float(loss) * tokens
        count += tokens
    model.train(was_training)
    return loss_sum, count

