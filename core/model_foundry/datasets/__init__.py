"""Datasets of any modality, contributed through :func:`~model_foundry.hookspecs.foundry_datasets`.

The ``data`` section of a config names a dataset ``kind`` (default ``text``); the kind's
:class:`~model_foundry.records.DatasetSpec` types the rest of the section and names a loader
``load(data_config, context) -> LoadedData``. Training and evaluation only ever see a
:class:`LoadedData`: two :class:`Dataset` splits whose ``batch(indices)`` is handed to a
collator, and what kind of examples they hold.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import attrs


class Dataset(Protocol):
    """A split of a dataset: a length, and the batch of some of its examples."""

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> Any:
        """The examples at ``indices`` in the form the split's collator takes (for text, a
        list of ``{"input_ids": [...]}``; for arrays, a dict of batched tensors)."""
        ...


@attrs.frozen
class DataContext:
    """What a dataset loader may need besides its own config."""

    cache_dir: str  # where derived data (token ids, decoded files) may be cached
    seed: int = 0
    tokenizer: Any = None  # the run's tokenizer, for text
    model_config: Any = None  # the model section, when there is one


@attrs.frozen
class LoadedData:
    """The splits of a ``data`` section, ready for training and evaluation.

    ``unit`` is what throughput counts (``"tokens"`` for text, ``"samples"`` otherwise), and
    ``units_per_example`` how many of them one example holds (the block size for text).
    ``info`` carries what writers and metrics need (``sample_rate``, ``num_classes``, ...).
    """

    modality: str
    train: Dataset
    validation: Dataset | None
    unit: str = "samples"
    units_per_example: int = 1
    cache_hits: int = 0
    info: Mapping[str, Any] = attrs.field(factory=dict)


def load_data(data: Any, context: DataContext, registry: Any = None) -> LoadedData:
    """Load a ``data`` section (a :class:`~model_foundry.config.DataSection`) through its kind's loader."""
    from model_foundry.errors import ConfigError, Problem
    from model_foundry.records import resolve
    from model_foundry.registry import get_registry, unique_entry

    spec = unique_entry((registry or get_registry()).datasets, data.kind, "dataset kind")
    if isinstance(spec, str):
        raise ConfigError(Problem(spec, "data.kind"))
    return resolve(spec.load)(data.params, context)
