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
from model_foundry.datasets.config import DigitsDataConfig, ImageFolderDataConfig
from model_foundry.datasets.files import cached_arrays, file_stamps, folder_files
from model_foundry.errors import ConfigError, FoundryError, Problem

DIGITS_LEVELS = 17  # scikit-learn's digits hold integer intensities 0..16
DIGITS_FILE = "sklearn/datasets/data/digits.csv.gz"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IMAGE_CACHE_FORMAT = 1


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


def _class_names(root: str, files: list[str]) -> list[str]:
    """The top sub-folder of each image under ``root``: its class."""
    names = []
    for path in files:
        relative = os.path.relpath(path, root)
        if os.sep not in relative:
            raise ConfigError(
                Problem(
                    f"{path!r} lies directly in {root!r}; with labels_from_folders each image sits in a sub-folder "
                    "named after its class (move it into one, or set labels_from_folders: false)",
                    "data.labels_from_folders",
                )
            )
        names.append(relative.split(os.sep, 1)[0])
    return names


def decode_images(files: list[str], height: int, width: int, channels: int) -> np.ndarray:
    """Decode, orient (EXIF), convert and resize every file: uint8 ``(N, channels, height, width)``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    pixels = np.empty((len(files), height, width, channels), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    for index, path in enumerate(files):
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert(mode).resize((width, height), Image.Resampling.BICUBIC)
                pixels[index] = np.asarray(image).reshape(height, width, channels)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ConfigError(
                Problem(f"cannot read image {path!r} ({exc}); replace or remove the file", "data.path")
            ) from None
    return pixels.transpose(0, 3, 1, 2)


def load_image_folder(config: ImageFolderDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``image_folder``: ``pixel_values`` (and ``class_labels`` from
    sub-folders), decoded once into the cache."""
    files = folder_files(config.path, IMAGE_EXTENSIONS, "PNG or JPEG images")
    root = os.path.abspath(os.path.expanduser(config.path))
    names = _class_names(root, files) if config.labels_from_folders else None
    height, width = config.height_width
    key = {
        "format": IMAGE_CACHE_FORMAT, "files": file_stamps(files), "size": [height, width], "channels": config.channels,
    }
    arrays, hit = cached_arrays(
        context.cache_dir, "images", key,
        lambda: {"pixels": decode_images(files, height, width, config.channels)},
    )
    examples = {"pixel_values": scale_levels(arrays["pixels"], 256)}
    info: dict = {"image_shape": (config.channels, height, width), "levels": 256, "files": len(files)}
    if names is not None:
        classes = sorted(set(names))
        examples["class_labels"] = np.searchsorted(classes, names).astype(np.int64)
        info.update(num_classes=len(classes), class_names=classes)
    return split_arrays(
        examples, modality="image", validation_fraction=config.validation_fraction, seed=config.seed,
        info=info, cache_hits=int(hit),
    )
