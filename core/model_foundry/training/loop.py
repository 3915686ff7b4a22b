"""The training loop behind ``foundry train``: a few hundred lines of our own on 🤗 Accelerate.

One process on the CPU by default; under ``accelerate launch`` or ``torchrun`` the same code
runs data-parallel (Accelerate wraps the model in DDP and each process reads its own share of
every batch). The loop knows no modality or objective by name: the data comes from its kind's
loader, batches from the objective's or the modality's collator, and a tokenizer exists only
for text. See docs/training.md for the outputs and the resume guarantees.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import signal
import sys
import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import attrs
import numpy as np
import torch

from model_foundry.checkpoint import save
from model_foundry.config import (
    DataSection,
    FoundryConfig,
    ModelConfig,
    OptimizerConfig,
    TrainingConfig,
    data_modality,
)
from model_foundry.datasets import DataContext, load_data
from model_foundry.errors import ConfigError, FoundryError, Problem
from model_foundry.evaluation import MetricContext, eval_collator, evaluate, make_collator, to_device, write_samples
from model_foundry.extensions import build_extensions, load_extension_states, sampling_weights, save_extension_states
from model_foundry.factory import create_model
from model_foundry.protocol import FoundryModel
from model_foundry.records import resolve
from model_foundry.registry import find_architecture, get_registry, unique_entry
from model_foundry.training import rundir
from model_foundry.training.reporting import LOSS_CURVE_FILE, LossWindow, MetricsLog, Progress, plot_loss_curve
from model_foundry.training.rundir import FINAL_DIR, SAMPLES_DIR
from model_foundry.training.state import (
    DEFAULT_OPTIMIZER,
    capture_rng,
    restore_rng,
    write_training_state,
)

# PyTorch's warning when a scheduler steps and its optimizer has not (yet).
SCHEDULER_BEFORE_OPTIMIZER = re.escape("Detected call of `lr_scheduler.step()` before `optimizer.step()`")


@attrs.define
class StepContext:
    """What a training step gets besides the model and the micro-batches of one optimizer step.

    A custom step (``foundry_training_steps``) drives the optimizers through these helpers, so
    mixed precision, DDP and clipping stay the loop's: see docs/training.md. One context serves
    the whole run (the loop advances ``step``): building one per step was measurable overhead.
    """

    accelerator: Any
    model: Any  # the model as training runs it (wrapped in DDP on several processes)
    optimizers: Mapping[str, Any]  # parameter group name -> its optimizer ("model" when the model names none)
    schedulers: Mapping[str, Any]  # the same names -> their LR schedulers (stepped by the loop, once per step)
    training: TrainingConfig
    step: int  # the optimizer step about to happen (1-based)
    extensions: Mapping[str, Any] = attrs.field(factory=dict)  # the config's extensions, by name
    # Whether an Accelerate optimizer's step is just the wrapped optimizer's (no loss scaler, no
    # XLA/FSDP/DeepSpeed): then the wrapped one is called directly, since Accelerate's per-call
    # checks (a package lookup, a signature inspection) cost more than a small model's whole step.
    direct: bool = False
    _parameters: dict[str, list[Any]] = attrs.field(factory=dict, init=False, repr=False)  # per optimizer, for clipping

    def extra_losses(self, batch: Mapping[str, Any], output: Any) -> dict[str, torch.Tensor]:
        """The extensions' loss terms for a batch and the model's output on it, as ``{"<extension>_loss": term}``:
        add them to the loss before the backward pass (they are logged under these names)."""
        if not self.extensions:
            return {}
        model = self.accelerator.unwrap_model(self.model)
        terms = {f"{name}_loss": extension.extra_loss(model, batch, output) for name, extension in self.extensions.items()}
        return {name: term for name, term in terms.items() if term is not None}

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` through Accelerate (mixed-precision loss scaling, DDP)."""
        if self.direct:  # Accelerate's backward is then this, after dividing the loss by 1
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def step_optimizer(self, name: str) -> None:
        """Clip the group's gradients at ``training.max_grad_norm``, step its optimizer, zero its gradients."""
        if name not in self.optimizers:
            raise FoundryError(f"no optimizer named {name!r}; this model's are: {', '.join(self.optimizers)}")
        optimizer = self.optimizers[name]
        if self.training.max_grad_norm is not None:
            parameters = self._parameters.get(name)
            if parameters is None:
                parameters = self._parameters[name] = [p for group in optimizer.param_groups for p in group["params"]]
            clip = torch.nn.utils.clip_grad_norm_ if self.direct else self.accelerator.clip_grad_norm_
            clip(parameters, self.training.max_grad_norm)
        inner = unwrap_optimizer(optimizer) if self.direct else optimizer
        inner.step()
        inner.zero_grad(set_to_none=True)

    def no_sync(self) -> Any:
        """A context in which backward passes do not average gradients across processes: wrap
        every micro-batch's backward but the last of those that feed one optimizer step."""
        return self.accelerator.no_sync(self.model)


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside an Accelerate one."""
    return optimizer.optimizer


def _direct(accelerator: Any) -> bool:
    """See :attr:`StepContext.direct`."""
    from accelerate.utils import DistributedType

    plain = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    return accelerator.scaler is None and accelerator.distributed_type in plain


def default_step(model: Any, batches: list[dict[str, Any]], context: StepContext) -> dict[str, torch.Tensor]:
    """Forward and backward over the micro-batches (gradients synced on the last), then step every optimizer.

    The gradient is that of the mean over the micro-batches of the loss plus the extensions'
    terms. Returns the mean ``loss``, of any other scalar ``*_loss`` or ``*_perplexity`` the model reports (a hybrid's
    ``clm_loss``) and of the extensions' terms, to be logged.
    """
    # One micro-batch (the usual case) skips the divisions and sums by one: on a small model each
    # tensor operation is measurable per-step overhead.
    count = len(batches)
    totals: dict[str, torch.Tensor] = {}
    for index, batch in enumerate(batches):
        with contextlib.nullcontext() if index == count - 1 else context.no_sync():
            output = model(**batch)
            extra = context.extra_losses(batch, output)
            loss = sum(extra.values(), output.loss)
            context.backward(loss if count == 1 else loss / count)
        for key, value in {**output, **extra}.items():
            if _is_loss(key) and torch.is_tensor(value) and value.dim() == 0:
                value = value.detach().float()
                totals[key] = totals[key] + value if key in totals else value
    for name in context.optimizers:
        context.step_optimizer(name)
    return totals if count == 1 else {key: total / count for key, total in totals.items()}


def as_logged_loss(value: Any) -> torch.Tensor:
    """A step's loss as a float tensor outside autograd (most steps already return one: kept as it is)."""
    if torch.is_tensor(value) and not value.requires_grad and value.dtype == torch.float32:
        return value
    return torch.as_tensor(value).detach().float()


# Named terms of a model's output (or a custom step's result) that training logs besides ``loss``: the
# loss's parts, and measures of how a model uses its capacity (a VQ-VAE's ``codebook_perplexity``).
LOGGED_SUFFIXES = ("_loss", "_perplexity")


def _is_loss(key: str) -> bool:
    return key == "loss" or key.endswith(LOGGED_SUFFIXES)


@attrs.frozen
class TrainResult:
    """The outcome of :func:`train`: the trained (unwrapped) model and where things were written."""

    model: Any
    tokenizer: Any  # None unless the data is text
    step: int
    interrupted: bool
    output_dir: str
    checkpoint: str | None  # the newest training checkpoint written
    final: str | None  # output_dir/final, when training finished
    last_metrics: Mapping[str, Any]  # the last training record, merged with the last evaluation's
    last_evaluation: Mapping[str, Any]  # the last evaluation record ({} without one)


def warn(message: str) -> None:
    """A user-facing warning on stderr (once per process: every process of a DDP run may have its own)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


# --- the data order --------------------------------------------------------------------------


class BlockOrder:
    """Which examples each micro-batch holds: a seeded permutation per epoch, split across processes.

    A pure function of the micro-batch index, so resuming needs only the index.
    """

    def __init__(self, num_blocks: int, batch_size: int, seed: int, rank: int, world: int):
        self.num_blocks, self.batch_size, self.seed, self.rank, self.world = num_blocks, batch_size, seed, rank, world
        self.per_epoch = num_blocks // (batch_size * world)
        if self.per_epoch == 0:
            raise ConfigError(
                Problem(
                    f"the training data has {num_blocks} examples, fewer than one batch of {batch_size} per process "
                    f"({world} process(es)); lower it or add data",
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


def collate(collator: Callable[[Any], Mapping[str, Any]], dataset: Any, indices: Any, device: torch.device) -> dict[str, Any]:
    """The model inputs of the examples at ``indices``, on ``device``."""
    return to_device(collator(dataset.batch(indices)), device)


# --- optimisation ----------------------------------------------------------------------------


def adamw_groups(parameters: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices, none on biases, norms and other 1-D parameters."""
    decay, no_decay, seen = [], [], set()
    for parameter in parameters:
        if not parameter.requires_grad or id(parameter) in seen:
            continue
        seen.add(id(parameter))
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule ``training.lr_scheduler`` names (see docs/training.md, "The learning rate").

    ``cosine`` and ``linear``: a warmup rising from ``min_lr_ratio`` of the peak, then a decay
    falling back to it at ``max_steps``; ``constant``: a warmup from 0, then the peak. A warmup
    longer than the run never completes. The factors are those of transformers'
    ``get_wsd_schedule`` (no stable phase) and ``get_constant_schedule_with_warmup``, equal at
    every step (tests/test_schedules.py); written here because importing
    ``transformers.optimization`` costs every run whose model and data need no transformers
    about 0.8 s of CPU at start-up.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        learning_rate_factor, kind=training.lr_scheduler, warmup=training.warmup_steps,
        decay=max(0, training.max_steps - training.warmup_steps), floor=training.min_lr_ratio,
    ))


def learning_rate_factor(step: int, *, kind: str, warmup: int, decay: int, floor: float) -> float:
    """The multiple of the peak learning rate that optimizer step ``step`` (from 0) uses."""
    if step < warmup:
        rise = step / max(1, warmup)
        return rise if kind == "constant" else floor + (1 - floor) * rise
    if kind == "constant":
        return 1.0
    if step >= warmup + decay:
        return floor
    progress = (step - warmup) / max(1, decay)
    shape = 1 - progress if kind == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * shape


def build_optimizers(model: torch.nn.Module, training: TrainingConfig) -> dict[str, torch.optim.AdamW]:
    """One AdamW per parameter group the model names (``parameter_groups()``), else one for all.

    A group's settings come from ``training.optimizers.<group>``, each unset field from
    ``training``. A name there that is not one of the model's groups is a ConfigError.
    """
    named = model.parameter_groups() if isinstance(model, FoundryModel) else None
    groups = {DEFAULT_OPTIMIZER: model.parameters()} if named is None else dict(named)
    unknown = [name for name in training.optimizers if named is None or name not in named]
    if unknown:
        have = f"its parameter groups are {', '.join(named)}" if named else \
            "it trains all its parameters with one optimizer, set by training's own learning_rate, weight_decay and betas"
        raise ConfigError([
            Problem(f"this model has no parameter group {name!r}; {have}", f"training.optimizers.{name}") for name in unknown
        ])
    optimizers = {}
    for name, parameters in groups.items():
        own = training.optimizers.get(name, OptimizerConfig())
        weight_decay, learning_rate, beta1, beta2 = (
            getattr(training, field) if getattr(own, field) is None else getattr(own, field)
            for field in ("weight_decay", "learning_rate", "adam_beta1", "adam_beta2")
        )
        optimizers[name] = torch.optim.AdamW(adamw_groups(parameters, weight_decay), lr=learning_rate, betas=(beta1, beta2))
    return optimizers


# --- locations for run-time config checks ----------------------------------------------------


def located(config: FoundryConfig, error: ConfigError) -> ConfigError:
    """``error`` with every unlocated problem placed at its key in the config file (or ``--set``)."""
    return ConfigError([p if p.location else attrs.evolve(p, location=config.locate(p.path)) for p in error.problems])


@contextlib.contextmanager
def locating(config: FoundryConfig) -> Any:
    """Re-raise a ConfigError from the block with its problems located in the config file."""
    try:
        yield
    except ConfigError as error:
        raise located(config, error) from None


# --- the loop --------------------------------------------------------------------------------


def _sections(config: FoundryConfig) -> tuple[ModelConfig, DataSection, TrainingConfig]:
    missing = [name for name in ("model", "data", "training") if getattr(config, name) is None]
    if missing:
        raise ConfigError(Problem(f"training needs the section(s): {', '.join(missing)}; see docs/training.md"))
    return config.model, config.data, config.training


def _accelerator(training: TrainingConfig, find_unused_parameters: bool) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

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
        # A custom step may run one part of the model at a time (a GAN's discriminator alone).
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else None,
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


# --- the text modality's part ------------------------------------------------------------------


def _text_tokenizer(config: FoundryConfig, resume_from: str | None, cache_dir: str, accelerator: Any) -> Any:
    """The run's tokenizer: the checkpoint's when resuming, else ``tokenizer.path`` or one trained on the data."""
    from model_foundry.factory import load_tokenizer
    from model_foundry.text.config import TokenizerConfig
    from model_foundry.text.data import obtain_tokenizer, resolve_files

    # Missing files are reported before any process waits for another.
    resolve_files(config.data.train_files, "data.train_files")
    resolve_files(config.data.validation_files, "data.validation_files")
    with accelerator.main_process_first():
        if resume_from:
            return load_tokenizer(resume_from)
        return obtain_tokenizer(config.tokenizer or TokenizerConfig(), config.data.params, cache_dir)


def _with_vocab(model: ModelConfig, tokenizer: Any) -> ModelConfig:
    """A text model config's ``vocab_size``: the tokenizer's when null; a smaller explicit one is an error."""
    size, current = len(tokenizer), model.vocab_size
    if current is None:
        return model.evolve(vocab_size=size)
    if current < size:
        raise ConfigError(Problem(
            f"{current} is smaller than the tokenizer's {size} tokens; set it to null to use the tokenizer's size",
            "model.vocab_size",
        ))
    return model


def check_block_size(model: Any, data: DataSection) -> None:
    """A located ConfigError when text ``data.block_size`` exceeds a language model's ``max_sequence_length``
    (also run by ``foundry validate``, on the meta device)."""
    from model_foundry.text.modeling import LanguageModel

    limit = model.max_sequence_length if isinstance(model, LanguageModel) else None
    if limit is not None and data.block_size > limit:
        raise ConfigError(Problem(
            f"{data.block_size} is longer than the model's max_sequence_length ({limit}); lower it or "
            "raise the model's position embeddings",
            "data.block_size",
        ))


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


def train(
    config: FoundryConfig, resume: bool | str = False, overrides: tuple[str, ...] = (), overwrite: bool = False
) -> TrainResult:
    """Train the model a config describes; see docs/training.md.

    ``overrides`` are the ``--set`` strings already applied to ``config`` (repeated in the
    command a hint gives to resume). ``resume``: ``True`` continues from the newest
    readable checkpoint in ``training.output_dir``; a path, from that ``checkpoint-<step>``
    directory, or from the newest in that run directory. Without it, an output directory that
    holds an earlier run is an error unless ``overwrite`` (which replaces that run). One run at a
    time holds an output directory (see :mod:`model_foundry.training.rundir`).
    """
    if resume and overwrite:
        raise FoundryError("--resume and --overwrite exclude each other: continue the earlier run, or replace it")
    model_config, data_section, training = _sections(config)
    run_dir, chosen = rundir.resolve_resume(resume, training.output_dir)
    if run_dir != os.path.abspath(training.output_dir):
        config = attrs.evolve(config, training=attrs.evolve(training, output_dir=run_dir))
    hint = "resume with: " + rundir.resume_command(config.path, overrides, run_dir, training.output_dir)
    with rundir.claim(run_dir, hold=rundir.is_main_process()), rundir.out_of_space_is_reported(run_dir, hint):
        if not resume:
            rundir.refuse_earlier_run(run_dir, overwrite)
            return _train(config, [])
        text = data_modality(data_section, get_registry()) == "text"
        return _train(config, rundir.resume_candidates(run_dir, chosen, model_config.to_dict(), training.max_steps, text))


def _train(config: FoundryConfig, candidates: list[str]) -> TrainResult:
    """The run itself, in a claimed output directory; ``candidates``: the checkpoints to resume
    from, newest first (none: start afresh)."""
    run = _Run(config, candidates)
    training, interrupted = run.training, False
    try:
        with _InterruptFlag() as interrupt:
            while run.step < training.max_steps:
                run.optimizer_step()
                last = run.step == training.max_steps
                if run.step % training.log_every == 0 or last:
                    run.log()
                if training.eval_every and (run.step % training.eval_every == 0 or last):
                    run.evaluate()
                interrupt.raised = run.on_any_process(interrupt.raised)
                if interrupt.raised or last or (training.save_every and run.step % training.save_every == 0):
                    run.save_checkpoint()
                if interrupt.raised:
                    interrupted = True
                    break
        return run.finish(interrupted)
    finally:
        if run.metrics is not None:
            run.metrics.close()


class _Run:
    """One training run: what its steps share, from the set-up to the final save.

    Set up in the order the random streams need (the seed, the model, the data, a seed per
    process, the collators, then a checkpoint's states); then :func:`_train` calls
    :meth:`optimizer_step` once per step, :meth:`log`, :meth:`evaluate` and
    :meth:`save_checkpoint` when they are due, and :meth:`finish`.
    """

    def __init__(self, config: FoundryConfig, candidates: list[str]):
        self.config, self.registry = config, get_registry()
        model_config, data_section, self.training = _sections(config)
        self.modality = data_modality(data_section, self.registry)
        self.output_dir = os.path.abspath(self.training.output_dir)
        custom = self.registry.training_steps.get(model_config.architecture)
        self.custom = bool(custom)
        self.train_step = resolve(custom[0][0].step) if custom else default_step
        self.accelerator = _accelerator(self.training, find_unused_parameters=self.custom)
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        with locating(config):
            model, optimizers = self._build(model_config, data_section, candidates[0] if candidates else None)
        state = self._restore(model, optimizers, candidates)
        with locating(config):
            self.extensions = build_extensions(config.extensions, self.unwrapped, self.registry)
        if self.resumed_from:
            load_extension_states(self.extensions, self.resumed_from, device=self.accelerator.device)
        self._start_reporting(state)
        # The step losses since the last training record and the time spent on them, as the checkpoint left them.
        self.window = LossWindow(state.get("window", {}))
        self.last_record: dict[str, Any] = {}
        self.last_evaluation: dict[str, Any] = {}
        self.last_checkpoint = self.resumed_from
        self.direct = _direct(self.accelerator)
        gather = self.accelerator.gather if self.world > 1 else None
        self.watch = rundir.LossWatch(self.output_dir, self.training.learning_rate, gather, self.accelerator.device)
        self.context = StepContext(
            self.accelerator, self.model, self.optimizers, self.schedulers, self.training, self.step + 1, self.extensions,
            self.direct,
        )
        # What a custom step may leave gradients on (cleared before each step, see optimizer_step).
        self.trained = [p for o in self.optimizers.values() for group in unwrap_optimizer(o).param_groups for p in group["params"]]
        # PyTorch warns when a scheduler's first step comes before its optimizer's; a custom step may
        # leave an optimizer for a later step (a GAN's generator) and it follows the schedule all the
        # same, so the first step of this process steps the schedulers quietly.
        self.quiet_schedulers = self.custom
        self.model.train()

    # --- set-up ---------------------------------------------------------------------------------

    def _build(self, model_config: ModelConfig, data_section: DataSection, resume_from: str | None) -> tuple[Any, dict[str, Any]]:
        """The tokenizer (text only), the model and its optimizers, the data, its order and collators."""
        from accelerate.utils import set_seed

        training, registry, modality = self.training, self.registry, self.modality
        cache_dir = rundir.data_cache_dir(data_section, self.output_dir)
        self.tokenizer = None
        if modality == "text":
            self.tokenizer = _text_tokenizer(self.config, resume_from, cache_dir, self.accelerator)
            model_config = _with_vocab(model_config, self.tokenizer)
        set_seed(training.seed)
        # Built for the data's modality (an architecture may model several).
        model = create_model(attrs.evolve(self.config, model=model_config), registry=registry)
        self.model_config = model.config
        if modality == "text":
            check_block_size(model, data_section)
        optimizers = build_optimizers(model, training)
        with self.accelerator.main_process_first():
            context = DataContext(cache_dir, training.seed, self.tokenizer, self.model_config)
            self.data = load_data(data_section, context, registry)
        self.order = BlockOrder(len(self.data.train), training.batch_size, training.seed, self.rank, self.world)
        set_seed(training.seed + self.rank)  # different dropout masks on each process
        # Every random draw of the collators (masking, dequantisation) comes from here, saved in checkpoints.
        self.collator_generator = torch.Generator().manual_seed(training.seed * 1_000_003 + self.rank)
        options = (training, self.model_config, data_section.params, modality, self.tokenizer)
        self.collator = make_collator(*options, self.collator_generator, registry)
        self.validation_collator = eval_collator(*options, registry) if self.data.validation is not None else None
        return model, optimizers

    def _restore(self, model: Any, optimizers: dict[str, Any], candidates: list[str]) -> dict[str, Any]:
        """The schedulers, the model and optimizers through ``accelerator.prepare``, and a
        checkpoint's weights and states when resuming; returns the checkpoint's run state ({} afresh)."""
        self.schedulers = {name: lr_scheduler(optimizer, self.training) for name, optimizer in optimizers.items()}
        self.step, self.resumed_from, state = 0, None, {}
        if candidates:
            # The newest checkpoint whose weights and state fit, an unreadable one skipped with a warning.
            self.resumed_from, state, optimizer_states, rng_states = rundir.restore(candidates, model, optimizers)
            self.step = state["step"]
        self.model, *prepared = self.accelerator.prepare(model, *optimizers.values())
        self.optimizers = dict(zip(optimizers, prepared, strict=True))
        if self.resumed_from:
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(optimizer_states[name])
                self.schedulers[name].load_state_dict(state["schedulers"][name])
            if len(rng_states) != self.world:
                warn(f"resuming {len(rng_states)}-process random state on {self.world} process(es): not bit-exact")
            restore_rng(rng_states[self.rank % len(rng_states)], self.collator_generator)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        return state

    def _start_reporting(self, state: Mapping[str, Any]) -> None:
        """The run directory cleaned of a killed run's leftovers, the metrics log, trackers, the
        progress display and its first line, and what evaluations need."""
        training, data, main = self.training, self.data, self.main
        self.capabilities = find_architecture(self.model_config.architecture, self.registry).schema.capabilities
        self.modality_spec = unique_entry(self.registry.modalities, self.modality, "modality")
        self.sample_every_eval = (
            self.capabilities.sampling and training.eval_samples > 0 and not isinstance(self.modality_spec, str)
        )
        resume_step = self.step if self.resumed_from else None
        if main:
            rundir.clean(self.output_dir, resume_step)
        self.metrics = MetricsLog(self.output_dir, resume_step) if main else None
        if training.report_to and main:
            self.accelerator.init_trackers(os.path.basename(self.output_dir), config=self.config.to_dict().get("training", {}))
        self.progress = Progress(training.max_steps, self.step, enabled=main)
        self.units_per_step = training.batch_size * training.gradient_accumulation_steps * data.units_per_example * self.world
        self.speed_key = f"{data.unit}_per_sec"
        examples = (
            f"blocks of {data.units_per_example} tokens" if data.unit == "tokens" else f"{self.modality} examples"
        ) + (" (cached)" if data.cache_hits else "")
        self.progress.message(
            f"training {self.model_config.architecture} ({self.unwrapped.num_parameters():,} parameters) on "
            f"{len(data.train):,} {examples}, {self.world} process(es)"
            + (f"; resuming from {self.resumed_from} at step {self.step}" if self.resumed_from else "")
        )
        self.metric_context = MetricContext(
            device=self.accelerator.device, capabilities=self.capabilities, data_info=data.info,
            batch_size=training.batch_size, seed=training.seed, autocast=self.accelerator.autocast,
        )
        self.started = time.perf_counter() - state.get("elapsed", 0.0)

    # --- the steps ------------------------------------------------------------------------------

    def optimizer_step(self) -> None:
        """One optimizer step: its micro-batches, the training step, the schedulers, the models'
        and extensions' step hooks; the losses join the window."""
        training, step = self.training, self.step
        micro = step * training.gradient_accumulation_steps
        batches = [self._micro_batch(micro + i) for i in range(training.gradient_accumulation_steps)]
        if self.custom:
            # Gradients a custom step left behind (a generator's pass through the critic) are in no
            # checkpoint: none may reach the next step, or a resumed run would differ. (The default
            # step leaves none.) What zero_grad(set_to_none=True) does, without its per-call cost.
            for parameter in self.trained:
                parameter.grad = None
        self.context.step = step + 1
        outcome = self.train_step(self.model, batches, self.context)
        losses = {k: as_logged_loss(v) for k, v in outcome.items() if _is_loss(k)}
        self.watch.observe(step + 1, losses)
        _step_schedulers(self.schedulers, quiet=self.quiet_schedulers)
        self.quiet_schedulers = False
        self.step = step = step + 1
        if isinstance(self.unwrapped, FoundryModel):
            self.unwrapped.on_optimizer_step(step)
        for extension in self.extensions.values():
            extension.on_optimizer_step(self.unwrapped, step)
        self.window.add(losses)
        self.progress.step()

    def _micro_batch(self, index: int) -> dict[str, Any]:
        """Micro-batch ``index`` of the run on the device, through the extensions' ``transform_batch``."""
        batch = collate(self.collator, self.data.train, self.order.indices(index), self.accelerator.device)
        for extension in self.extensions.values():
            batch = extension.transform_batch(batch, self.collator_generator)
        return batch

    def log(self) -> None:
        """A training record: each loss's mean over the window (and the processes), the learning
        rate(s), the window's speed."""
        self.watch.check()
        accelerator, window = self.accelerator, self.window
        means = {
            key: self._mean_over_processes(torch.as_tensor(total, device=accelerator.device) / window.counts[key])
            for key, total in sorted(window.sums.items(), key=lambda item: item[0] != "loss")
        }
        rates = {f"lr_{name}": s.get_last_lr()[0] for name, s in self.schedulers.items()} if len(self.schedulers) > 1 else {}
        steps, seconds = window.close()
        self.last_record = {
            "step": self.step, **means, "lr": next(iter(self.schedulers.values())).get_last_lr()[0], **rates,
            self.speed_key: round(self.units_per_step * steps / max(seconds, 1e-9), 1), "elapsed": round(self.elapsed(), 3),
        }
        self._record(self.last_record)

    def evaluate(self) -> None:
        """Evaluate on the validation split (when there is one) and write samples (models that
        sample), with the window's clock paused."""
        with self.window.clock.paused():
            self.watch.check()
            record: dict[str, Any] = {"step": self.step}
            if self.data.validation is not None:
                record.update(evaluate(
                    self.unwrapped, self.data, self.validation_collator, context=self.metric_context,
                    batch_size=self.training.batch_size, max_batches=self.training.eval_batches, rank=self.rank,
                    world=self.world, reduce=self._sum_over_processes, sampling=self._sampling, registry=self.registry,
                ))
            if self.sample_every_eval and self.main:
                write_samples(
                    self.unwrapped, self.modality_spec, os.path.join(self.output_dir, SAMPLES_DIR, f"step-{self.step}"),
                    num_samples=self.training.eval_samples, seed=self.training.seed, capabilities=self.capabilities,
                    data_info=self.data.info, sampling=self._sampling,
                )
            record["elapsed"] = round(self.elapsed(), 3)
        if len(record) > 2:  # more than the step and the time
            self._record(record)
            self.last_record, self.last_evaluation = {**self.last_record, **record}, record

    def save_checkpoint(self) -> None:
        """``checkpoint-<step>/``: the model and the whole training state, the oldest pruned; the
        window's clock paused."""
        from accelerate.utils import gather_object

        with self.window.clock.paused():
            self.watch.check()  # never a checkpoint of weights a non-finite loss has reached
            rng = gather_object([capture_rng(self.collator_generator)])
            directory = os.path.join(self.output_dir, f"checkpoint-{self.step}")
            if self.main:
                run_state = {
                    "step": self.step, "micro_batches": self.step * self.training.gradient_accumulation_steps,
                    "world_size": self.world, "elapsed": self.elapsed(), "window": self.window.state(),
                    "schedulers": {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()},
                }
                optimizer_states = {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

                def training_state(staging: str) -> None:
                    write_training_state(staging, run_state, optimizer_states, rng)
                    save_extension_states(self.extensions, staging)

                # Not flushed to disk here (final/ is): a crash of the process still leaves whole checkpoints only,
                # and an unflushed one lost with the machine is skipped by --resume for the one before.
                save(self.unwrapped, directory, tokenizer=self.tokenizer, metrics=self.last_record, config=self.config,
                     extra=training_state, data_info=self.data.info, durable=False)
                rundir.prune(self.output_dir, self.training.keep_checkpoints)
            self.accelerator.wait_for_everyone()
        self.last_checkpoint = directory

    def on_any_process(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any process (a Ctrl-C seen by one stops them all)."""
        if self.world == 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor(float(flag), device=self.accelerator.device), "sum").item())

    def finish(self, interrupted: bool) -> TrainResult:
        """``final/`` (unless interrupted) and the loss curve; the trackers closed."""
        self.progress.close()
        final = None
        if self.main:
            if not interrupted:
                final = save(
                    self.unwrapped, os.path.join(self.output_dir, FINAL_DIR), tokenizer=self.tokenizer,
                    metrics=self.last_record, config=self.config, data_info=self.data.info,
                    extra=lambda staging: save_extension_states(self.extensions, staging),
                )
            plot_loss_curve(self.metrics.records, os.path.join(self.output_dir, LOSS_CURVE_FILE))
        if self.training.report_to:
            self.accelerator.end_training()
        self.accelerator.wait_for_everyone()
        return TrainResult(
            self.unwrapped, self.tokenizer, self.step, interrupted, self.output_dir, self.last_checkpoint, final,
            self.last_record, self.last_evaluation,
        )

    # --- what the steps share -------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds of training so far (a resumed run continues its checkpoint's count)."""
        return time.perf_counter() - self.started

    def _sampling(self) -> Any:
        return sampling_weights(self.extensions, self.unwrapped)

    def _mean_over_processes(self, value: torch.Tensor) -> float:
        """A scalar tensor's mean over the processes (Accelerate's reduce, about 60 µs, only when there are several)."""
        if self.world > 1:
            value = self.accelerator.reduce(value, "mean")
        return value.item()

    def _sum_over_processes(self, total: float, weight: float) -> tuple[float, float]:
        device = self.accelerator.device
        sums = self.accelerator.reduce(torch.tensor([total, weight], dtype=torch.float64, device=device), "sum")
        return float(sums[0]), float(sums[1])

    def _record(self, record: Mapping[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(record)
        self.progress.record(record)
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.step)


def _step_schedulers(schedulers: Mapping[str, Any], quiet: bool) -> None:
    """Step every scheduler; ``quiet``: without PyTorch's warning about an optimizer that has not
    stepped yet (it warns on a scheduler's first step only)."""
    with warnings.catch_warnings() if quiet else contextlib.nullcontext():
        if quiet:
            warnings.filterwarnings("ignore", SCHEDULER_BEFORE_OPTIMIZER)
        for scheduler in schedulers.values():
            scheduler.step()

