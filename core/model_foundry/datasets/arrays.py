"""Datasets held in memory as numpy arrays, one per batch key, and their seeded train/validation split.

Every built-in kind other than ``text`` ends here: its loader builds the full arrays
(``pixel_values``, ``class_labels``, ...) once and :func:`split_arrays` cuts them into two
:class:`ArrayDataset` splits. A batch is one numpy fancy-index per key wrapped by
``torch.from_numpy``: no per-example Python loop and no copy beyond the gather itself.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from model_foundry.datasets import LoadedData
from model_foundry.errors import ConfigError, Problem


class ArrayDataset:
    """Aligned arrays (the first dimension indexes examples), batched by fancy indexing."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        lengths = {key: len(array) for key, array in arrays.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"an ArrayDataset needs arrays of one length, got {lengths}")
        self.arrays: dict[str, np.ndarray] = {key: np.ascontiguousarray(array) for key, array in arrays.items()}
        self._length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._length

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """The examples at ``indices`` as a dict of batched tensors (the collator's input)."""
        index = np.asarray(indices, dtype=np.intp)
        return {key: torch.from_numpy(array[index]) for key, array in self.arrays.items()}


def split_arrays(
    arrays: Mapping[str, np.ndarray],
    *,
    modality: str,
    validation_fraction: float,
    seed: int,
    info: Mapping[str, Any] | None = None,
    cache_hits: int = 0,
) -> LoadedData:
    """Hold out ``validation_fraction`` of the examples, chosen by a permutation seeded with ``seed``.

    Both splits keep the examples in their original order, so the split is a property of
    the data and the seed alone.
    """
    count = len(next(iter(arrays.values())))
    held_out = round(count * validation_fraction)
    if validation_fraction > 0 and not 0 < held_out < count:
        raise ConfigError(
            Problem(
                f"{count} example(s) with validation_fraction {validation_fraction} leave an empty split; "
                "use more examples, change the fraction, or set it to 0 for no validation split",
                "data.validation_fraction",
            )
        )
    order = np.random.default_rng(seed).permutation(count)
    validation_rows, train_rows = np.sort(order[:held_out]), np.sort(order[held_out:])
    train = ArrayDataset({key: array[train_rows] for key, array in arrays.items()})
    validation = ArrayDataset({key: array[validation_rows] for key, array in arrays.items()}) if held_out else None
    return LoadedData(
        modality=modality, train=train, validation=validation, unit="samples", units_per_example=1,
        cache_hits=cache_hits, info=dict(info or {}),
    )

