"""Image dataset kinds: ``digits`` (scikit-learn's bundled 8x8 digits) and ``image_folder``.

Images are batched as ``pixel_values``, float32 ``(N, C, H, W)`` scaled to [-1, 1]; their
class labels, when there are any, as ``class_labels`` (int64). ``info`` carries
``image_shape``, ``num_classes`` and ``levels``, the number of distinct values a pixel had
before scaling (for dequantisation and bits per dimension).
"""

from __future__ import annotations

import os
from importlib import metadata

import numpy as np

from model_foundry.datasets import DataContext, LoadedData
from model_foundry.datasets.arrays import split_arrays
from model_foundry.datasets.config import DigitsDataConfig
from model_foundry.errors import FoundryError

DIGITS_LEVELS = 17  # scikit-learn's digits hold integer intensities 0..16
DIGITS_FILE = "sklearn/datasets/data/digits.csv.gz"


def scale_levels(values: np.ndarray, levels: int) -> np.ndarray:
    """Integer intensities ``0 .. levels - 1`` to float32 in [-1, 1]."""
    return values.astype(np.float32) * (2.0 / (levels - 1)) - 1.0


def digits_table() -> np.ndarray:
    """scikit-learn's digits as one ``(1797, 65)`` array: 64 intensities and the label per row.

    Read straight from the file scikit-learn ships, because importing scikit-learn takes
    seconds; its own loader is the fallback should the file ever move.
    """
    try:
        bundled = metadata.distribution("scikit-learn").locate_file(DIGITS_FILE)
    except metadata.PackageNotFoundError:
        raise FoundryError(
            "data.kind 'digits' reads scikit-learn's bundled digits, and scikit-learn is not installed; "
            "pip install 'model-foundry[images]'"
        ) from None
    if os.path.isfile(str(bundled)):
        return np.loadtxt(str(bundled), delimiter=",")
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return np.concatenate([digits.data, digits.target[:, None]], axis=1)


def load_digits(config: DigitsDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``digits``: ``pixel_values`` (N, 1, 8, 8) and ``class_labels``."""
    table = digits_table()
    pixels = scale_levels(table[:, :64].reshape(-1, 1, 8, 8), DIGITS_LEVELS)
    labels = table[:, 64].astype(np.int64)
    info = {"num_classes": 10, "image_shape": (1, 8, 8), "levels": DIGITS_LEVELS}
    return split_arrays(
        {"pixel_values": pixels, "class_labels": labels}, modality="image",
        validation_fraction=config.validation_fraction, seed=config.seed, info=info,
    )
