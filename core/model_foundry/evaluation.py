"""Evaluation for any modality: the validation loss, and the metrics that apply.

Metrics come through :func:`~model_foundry.hookspecs.foundry_metrics`. Each
:class:`~model_foundry.specs.MetricSpec` names ``compute(model, dataset, context) -> dict``;
evaluation runs those whose ``modalities`` include the data's and whose ``requires`` the
model's capabilities meet, and merges their answers into one record.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping

import attrs


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
