"""Evaluation for any modality: the validation loss, the metrics that apply, and samples.

Used by the training loop at each evaluation and by ``foundry eval``:

* :func:`make_collator` — the collator that turns a dataset's batches into model inputs (the
  objective's, or the modality's own); :func:`eval_collator` — the same on a fixed seed;
* :func:`validation_loss` — this process's share of the loss over a validation split;
* :func:`evaluate` — the mean validation loss and every metric that applies;
* :func:`write_samples` — a seeded batch of samples written the modality's way.

Metrics come through :func:`~model_foundry.hookspecs.foundry_metrics`. Each
:class:`~model_foundry.records.MetricSpec` names ``compute(model, dataset, context) -> dict``;
evaluation runs those whose ``modalities`` include the data's and whose ``requires`` the
model's capabilities meet, and merges their answers into one record. A metric that fails is
a bug in its plugin: its exception propagates.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs

from model_foundry.errors import ConfigError, FoundryError, Problem

if TYPE_CHECKING:
    import torch

    from model_foundry.config import ModelConfig, TrainingConfig
    from model_foundry.datasets import Dataset, LoadedData
    from model_foundry.registry import Registry

IGNORE_INDEX = -100  # labels that carry no loss (text padding, unmasked positions)
SAMPLES_STEM = "samples"


@attrs.frozen
class MetricContext:
    """What a metric gets besides the model and the validation split."""

    device: Any  # where the model is
    capabilities: Any  # the architecture's Capabilities
    data_info: Mapping[str, Any] = attrs.field(factory=dict)  # LoadedData.info (num_classes, sample_rate, ...)
    eval_loss: float | None = None  # the mean validation loss, when evaluation computed one
    num_samples: int = 1000  # samples to draw for sample-quality metrics
    batch_size: int = 64
    seed: int = 0  # seeds every random draw of the metric: evaluations are comparable
    autocast: Callable[[], Any] = contextlib.nullcontext


# --- collators ---------------------------------------------------------------------------------


def objective_of(training: TrainingConfig, model_config: ModelConfig, registry: Registry) -> str | None:
    """``training.objective``, else the architecture's first declared objective, else ``None``."""
    from model_foundry.config import objectives_of

    if training.objective is not None:
        return training.objective
    return next(iter(objectives_of(model_config, registry)), None)


def make_collator(
    training: TrainingConfig, model_config: ModelConfig, data_config: Any, modality: str, tokenizer: Any,
    generator: torch.Generator, registry: Registry | None = None,
) -> Callable[[Any], Any]:
    """The collator for a run: the objective's (:func:`objective_of`), or the modality's own
    (:class:`~model_foundry.records.ModalitySpec` ``collator``), or none (batches go in as they are).

    Its factory gets those of ``mlm_probability``, ``generator``, ``model_config`` and
    ``data_config`` (the kind's typed ``data`` fields) that its signature names, plus
    ``training.collator_options``; an option it does not take is a ConfigError there.
    An objective's factory also gets the tokenizer first (``None`` outside text).
    """
    from model_foundry.records import resolve
    from model_foundry.registry import get_registry, unique_entry

    registry = registry or get_registry()
    objective = objective_of(training, model_config, registry)
    if objective is not None:
        spec = unique_entry(registry.collators, objective, "objective")
        if isinstance(spec, str):
            raise ConfigError(Problem(spec, "training.objective"))
        factory, leading, what = resolve(spec.factory), (tokenizer,), f"objective {objective!r}"
    else:
        spec = unique_entry(registry.modalities, modality, "modality")
        if isinstance(spec, str):
            raise FoundryError(f"{spec} (the data's modality; a bug in its dataset kind's plugin)")
        if spec.collator is None:
            return as_is
        factory, leading, what = resolve(spec.collator), (), f"the {modality} modality"
    offered = {
        "mlm_probability": training.mlm_probability, "generator": generator, "model_config": model_config,
        "data_config": data_config,
    }
    return factory(*leading, **_accepted(factory, offered, training.collator_options, what))


def _accepted(factory: Callable[..., Any], offered: Mapping[str, Any], chosen: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The options a factory's signature takes: every offered one it names, and all ``chosen`` ones."""
    parameters = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {**offered, **chosen}
    refused = [name for name in chosen if name not in parameters]
    if refused:
        takes = ", ".join(n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL) or "nothing"
        raise ConfigError([
            Problem(f"the collator of {what} takes no option {name!r}; it takes: {takes}", f"training.collator_options.{name}")
            for name in refused
        ])
    return {name: value for name, value in {**offered, **chosen}.items() if name in parameters}


def as_is(batch: Any) -> Any:
    """The collator of data whose batches are already model inputs."""
    return batch


def eval_collator(
    training: TrainingConfig, model_config: ModelConfig, data_config: Any, modality: str, tokenizer: Any,
    registry: Registry | None = None,
) -> Callable[[Any], Any]:
    """:func:`make_collator` drawing from its own fixed-seed generator, so that every evaluation
    (masking, dequantisation noise) sees the same batches and training's random streams are untouched."""
    import torch

    generator = torch.Generator().manual_seed(training.seed)
    return make_collator(training, model_config, data_config, modality, tokenizer, generator, registry)


def to_device(batch: Mapping[str, Any], device: Any) -> dict[str, Any]:
    return {key: value.to(device, non_blocking=True) if hasattr(value, "to") else value for key, value in batch.items()}


# --- the validation loss -----------------------------------------------------------------------


def validation_loss(
    model: Any, dataset: Dataset, collator: Callable[[Any], Any], *, batch_size: int, device: Any,
    max_batches: int | None = None, rank: int = 0, world: int = 1, autocast: Callable[[], Any] = contextlib.nullcontext,
) -> tuple[float, float]:
    """``(sum of loss × weight, sum of weights)`` over this process's share of ``dataset``.

    A batch's weight is its number of labelled positions (``labels`` other than -100) when it
    has ``labels`` (text: the loss is a mean over label tokens), else its number of examples;
    so the ratio of the two sums, over all processes, is the mean loss over the split.
    """
    import torch

    was_training = model.training
    model.eval()
    loss_sum, weight = 0.0, 0.0
    try:
        with torch.no_grad():
            for number, start in enumerate(range(0, len(dataset), batch_size)):
                if max_batches is not None and number >= max_batches:
                    break
                if number % world != rank:
                    continue
                indices = range(start, min(start + batch_size, len(dataset)))
                batch = to_device(collator(dataset.batch(indices)), device)
                with autocast():
                    loss = model(**batch).loss
                labels = batch.get("labels")
                count = int((labels != IGNORE_INDEX).sum()) if torch.is_tensor(labels) else len(indices)
                loss_sum += float(loss) * count
                weight += count
    finally:
        model.train(was_training)
    return loss_sum, weight


def evaluate(
    model: Any, data: LoadedData, collator: Callable[[Any], Any], *, context: MetricContext, batch_size: int,
    max_batches: int | None = None, rank: int = 0, world: int = 1,
    reduce: Callable[[float, float], tuple[float, float]] | None = None,
    sampling: Callable[[], Any] = contextlib.nullcontext, registry: Registry | None = None,
) -> dict[str, float]:
    """``{"eval_loss": ..., **metrics}`` on ``data.validation``.

    ``eval_loss`` is the mean over the split (:func:`validation_loss`; ``reduce`` sums the two
    totals over processes when several share the split); then every metric that applies
    (:func:`applicable_metrics`) runs with ``context.eval_loss`` set, the model in eval mode and
    inside ``sampling()`` (the weights samples come from, e.g. an EMA), on every process alike.
    """
    from model_foundry.records import resolve

    if data.validation is None:
        raise FoundryError("evaluation needs a validation split, and the data has none")
    total, weight = validation_loss(
        model, data.validation, collator, batch_size=batch_size, device=context.device, max_batches=max_batches,
        rank=rank, world=world, autocast=context.autocast,
    )
    if reduce is not None:
        total, weight = reduce(total, weight)
    eval_loss = total / weight if weight > 0 else float("nan")
    record = {"eval_loss": eval_loss}
    context = attrs.evolve(context, eval_loss=eval_loss)
    was_training = model.training
    model.eval()
    try:
        with sampling():
            for spec in applicable_metrics(data.modality, context.capabilities, registry):
                record.update(resolve(spec.compute)(model, data.validation, context))
    finally:
        model.train(was_training)
    return record


def applicable_metrics(modality: str, capabilities: Any, registry: Registry | None = None) -> list[Any]:
    """The registered :class:`~model_foundry.records.MetricSpec` s for ``modality`` whose
    ``requires`` the capabilities meet, in registration order."""
    from model_foundry.registry import get_registry, unique_entry

    found = []
    for name in (registry or get_registry()).metrics:
        spec = unique_entry((registry or get_registry()).metrics, name, "metric")
        if isinstance(spec, str):
            raise FoundryError(spec)
        if (not spec.modalities or modality in spec.modalities) and all(getattr(capabilities, r) for r in spec.requires):
            found.append(spec)
    return found


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def perplexity_metric(model: Any, dataset: Dataset, context: MetricContext) -> dict[str, float]:
    """Text's metric: ``exp(eval_loss)`` (the loss is a mean over label tokens)."""
    return {"perplexity": perplexity(context.eval_loss)}


# --- samples -----------------------------------------------------------------------------------


def write_samples(
    model: Any, modality: Any, directory: str, *, num_samples: int, seed: int, capabilities: Any,
    data_info: Mapping[str, Any], sampling: Callable[[], Any] = contextlib.nullcontext,
) -> list[str]:
    """Draw ``num_samples`` from a model that can sample and write them into ``directory``.

    Draws from a CPU generator seeded with ``seed`` (the same samples for the same weights,
    so successive evaluations compare), inside ``sampling()`` (e.g. EMA weights swapped in);
    conditional models get class labels ``0, 1, ..., num_classes - 1, 0, ...``. The
    modality's ``write_samples`` writes them (a ``.npy`` where it has none); the directory is
    written atomically. Returns the paths written.
    """
    import torch

    from model_foundry.checkpoint import atomic_directory

    conditions = None
    if capabilities.conditional and model.num_classes:
        conditions = torch.arange(num_samples, device=next(model.parameters()).device) % model.num_classes
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), sampling():
            samples = model.sample(num_samples, generator=torch.Generator().manual_seed(seed), conditions=conditions)
    finally:
        model.train(was_training)
    samples = samples.detach().float().cpu()
    with atomic_directory(directory) as staging:
        written = write_modality_samples(modality, samples, os.path.join(staging, SAMPLES_STEM), data_info)
    return [os.path.join(directory, os.path.relpath(path, staging)) for path in written]


def write_modality_samples(modality: Any, samples: torch.Tensor, stem: str, info: Mapping[str, Any]) -> list[str]:
    """Write ``samples`` the way ``modality`` (a ModalitySpec) shows them, or as ``stem.npy`` where it
    has no writer; returns the paths written."""
    import numpy as np

    from model_foundry.records import resolve

    if modality.write_samples is None:
        np.save(stem + ".npy", samples.detach().float().cpu().numpy())
        return [stem + ".npy"]
    return list(resolve(modality.write_samples)(samples, stem, **info))
