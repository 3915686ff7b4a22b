"""The ``npy`` dataset kind: examples of any array modality from a ``.npy`` or ``.npz`` file.

The first dimension indexes examples; ``data.modality`` says what they are, and so their
layout and scaling (the batch key follows the modality):

=============  =====================  ==========================================================
modality       one example            values
=============  =====================  ==========================================================
image          (C, H, W) or (H, W)    uint8 0..255 scaled to [-1, 1]; floats kept, must be in [-1, 1]
audio          (T,)                   int16 scaled by 1/32768; floats kept, must be in [-1, 1]
vector         (D,)                   any real numbers, as float32
point_cloud    (P, 3)                 any real numbers, as float32
=============  =====================  ==========================================================

Class labels (integers >= 0, one per example) come from another array of the ``.npz``
(``labels_key``) or from a ``.npy`` of their own (``labels_path``).
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from model_foundry.datasets import DataContext, LoadedData
from model_foundry.datasets.arrays import split_arrays
from model_foundry.datasets.config import NpyDataConfig
from model_foundry.datasets.images import scale_levels
from model_foundry.errors import ConfigError, Problem
from model_foundry.records import ModalitySpec

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
EXAMPLE_DIMS = {"image": 3, "audio": 1, "vector": 1, "point_cloud": 2}


def _problem(message: str, key: str) -> ConfigError:
    return ConfigError(Problem(message, f"data.{key}"))


def read_array(path: str, array_key: str | None, key: str, key_of_name: str | None = None) -> np.ndarray:
    """The array in a ``.npy`` file, or the one named ``array_key`` (the only one, when ``None``)
    in a ``.npz``. ``key`` and ``key_of_name`` are the config keys the path and name come from."""
    full = os.path.expanduser(path)
    if not os.path.isfile(full):
        raise _problem(f"file not found: {path!r} (relative paths start at {os.getcwd()})", key)
    with open(full, "rb") as handle:
        magic = handle.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC and not magic.startswith(ZIP_MAGIC):
        raise _problem(f"{path!r} is not a .npy or .npz file; save arrays with numpy.save or numpy.savez", key)
    try:
        loaded: Any = np.load(full, allow_pickle=False)
    except ValueError as exc:  # numpy refuses object arrays without pickle
        raise _problem(f"{path!r} holds Python objects ({exc}); store a plain numeric array", key) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _problem(f"{path!r} is not a readable .npy or .npz file ({exc})", key) from None
    if isinstance(loaded, np.ndarray):
        return loaded
    name_key = key_of_name or key
    with loaded:
        names = list(loaded.files)
        if array_key is None and len(names) == 1:
            array_key = names[0]
        if array_key not in names:
            what = f"no array {array_key!r}" if array_key is not None else f"{len(names)} arrays; name one with data.{name_key}"
            raise _problem(f"{path!r} holds {what} (arrays: {', '.join(names) or 'none'})", name_key)
        try:
            return loaded[array_key]
        except ValueError as exc:
            raise _problem(f"array {array_key!r} of {path!r} holds Python objects ({exc}); store a plain numeric array", name_key) from None


def modality_spec(name: str) -> ModalitySpec:
    """The registered modality ``name`` (its batch key and layout)."""
    from model_foundry.registry import get_registry, unique_entry

    spec = unique_entry(get_registry().modalities, name, "modality")
    if isinstance(spec, str):
        raise _problem(spec, "modality")
    return spec


def _examples(array: np.ndarray, config: NpyDataConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """The examples in the modality's layout and scale, and what ``info`` learns from them."""
    modality, stored = config.modality, tuple(array.shape[1:])
    if array.ndim == 0 or len(array) == 0:
        raise _problem(f"{config.path!r} holds no examples (shape {tuple(array.shape)})", "path")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise _problem(f"{config.path!r} holds {array.dtype} values; expected real numbers", "path")
    if modality == "image" and config.channels_last and array.ndim == 4:
        array = array.transpose(0, 3, 1, 2)
    if modality == "image" and array.ndim == 3:
        array = array[:, None]
    if array.ndim - 1 != EXAMPLE_DIMS[modality] or (modality == "point_cloud" and array.shape[-1] != 3):
        raise _problem(
            f"{config.path!r} holds examples of shape {stored}; {modality} examples are {modality_spec(modality).sample_shape}",
            "modality",
        )
    if config.shape is not None and tuple(array.shape[1:]) != tuple(config.shape):
        read = f"{tuple(array.shape[1:])} (stored as {stored})" if tuple(array.shape[1:]) != stored else f"{stored}"
        raise _problem(f"{config.path!r} holds examples of shape {read}, and data.shape expects {tuple(config.shape)}", "shape")
    info: dict[str, Any] = {}
    if modality == "image" and array.dtype == np.uint8:
        return scale_levels(array, 256), {"image_shape": tuple(array.shape[1:]), "levels": 256}
    if modality == "audio" and array.dtype == np.int16:
        return array.astype(np.float32) / 32768.0, {"sample_rate": config.sample_rate}
    if modality in ("image", "audio"):
        if not np.issubdtype(array.dtype, np.floating):
            native = "uint8" if modality == "image" else "int16"
            raise _problem(f"{config.path!r} holds {array.dtype} {modality} values; store {native} or floats in [-1, 1]", "path")
        low, high = float(array.min()), float(array.max())
        if low < -1.0 or high > 1.0:
            raise _problem(
                f"{config.path!r} holds {modality} values in [{low:g}, {high:g}]; floats must be scaled to [-1, 1] "
                f"(e.g. x * 2 - 1 for values in [0, 1])",
                "path",
            )
        info = {"image_shape": tuple(array.shape[1:])} if modality == "image" else {"sample_rate": config.sample_rate}
    return array.astype(np.float32), info


def _labels(config: NpyDataConfig, count: int) -> np.ndarray | None:
    if config.labels_key is not None:
        labels, key = read_array(config.path, config.labels_key, "path", "labels_key"), "labels_key"
    elif config.labels_path is not None:
        labels, key = read_array(config.labels_path, None, "labels_path"), "labels_path"
    else:
        return None
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise _problem(f"class labels must be {count} integers, one per example; got {labels.dtype} of shape {tuple(labels.shape)}", key)
    if labels.min() < 0:
        raise _problem(f"class labels must be >= 0, got {labels.min()}", key)
    return labels.astype(np.int64)


def load_npy(config: NpyDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``npy``: the modality's batch key (and ``class_labels``)."""
    examples, info = _examples(read_array(config.path, config.key, "path", "key"), config)
    arrays = {modality_spec(config.modality).input_key: examples}
    labels = _labels(config, len(examples))
    if labels is not None:
        arrays["class_labels"] = labels
        info["num_classes"] = int(labels.max()) + 1
    return split_arrays(
        arrays, modality=config.modality, validation_fraction=config.validation_fraction, seed=config.seed, info=info,
    )
