"""The typed ``data`` sections of the built-in dataset kinds other than ``text``.

Plain attrs classes with no numpy or torch in sight: :mod:`model_foundry.builtins` names them
when it answers ``foundry_datasets``, and ``foundry list`` must stay light. The loaders live
beside them (:mod:`~model_foundry.datasets.images`, :mod:`~model_foundry.datasets.vectors`,
:mod:`~model_foundry.datasets.audio`, :mod:`~model_foundry.datasets.npy`).
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

from model_foundry.fields import non_negative, option, positive, probability

TOY_DISTRIBUTIONS = ("moons", "circles", "8gaussians", "checkerboard", "swiss_roll", "s_curve")
# Distributions that also exist in 3-D (the others are planar only).
TOY_3D = ("swiss_roll", "s_curve")
ARRAY_MODALITIES = ("image", "audio", "vector", "point_cloud")


def _validation_fraction(default: float) -> float:
    return option(default, doc="share of the examples held out for validation (0: no validation split)", validator=probability)


def _split_seed() -> int:
    return option(0, doc="seed of the train/validation split")


@attrs.frozen
class DigitsDataConfig:
    """``data`` of kind ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""

    validation_fraction: float = _validation_fraction(0.2)
    seed: int = _split_seed()


@attrs.frozen
class ToyDataConfig:
    """``data`` of kind ``toy``: points drawn from a 2-D or 3-D toy distribution, seeded."""

    name: Literal["moons", "circles", "8gaussians", "checkerboard", "swiss_roll", "s_curve"] = option(
        "moons", doc="the distribution: " + ", ".join(TOY_DISTRIBUTIONS)
    )
    num_samples: int = option(10000, doc="points drawn (training and validation together)", validator=positive)
    noise: Optional[float] = option(
        None, doc="standard deviation of Gaussian noise added to each coordinate (default: the distribution's own)",
        validator=non_negative,
    )
    dim: Literal[2, 3] = option(2, doc="2 or 3 coordinates (3 for " + " and ".join(TOY_3D) + " only)")
    seed: int = option(0, doc="seed of the points and of the train/validation split")
    validation_fraction: float = _validation_fraction(0.1)

    def validate(self):
        if self.dim == 3 and self.name not in TOY_3D:
            yield "dim", f"{self.name} is planar; dim 3 exists for {', '.join(TOY_3D)}"


@attrs.frozen
class NpyDataConfig:
    """``data`` of kind ``npy``: examples stored in a ``.npy`` or ``.npz`` file."""

    path: str = option(doc=".npy or .npz file (relative paths start at the working directory)")
    modality: Literal["image", "audio", "vector", "point_cloud"] = option(
        "vector", doc="what the examples are: " + ", ".join(ARRAY_MODALITIES)
    )
    key: Optional[str] = option(None, doc="the array to read from an .npz (default: its only array)")
    labels_key: Optional[str] = option(None, doc="an .npz array of integer class labels, one per example")
    labels_path: Optional[str] = option(None, doc="a .npy file of integer class labels, one per example")
    shape: Optional[list[int]] = option(None, doc="the expected shape of one example, e.g. [1, 28, 28]; checked on load")
    channels_last: bool = option(False, doc="images stored as (N, H, W, C): move channels first")
    sample_rate: int = option(16000, doc="audio: samples per second (for writing samples)", validator=positive)
    validation_fraction: float = _validation_fraction(0.1)
    seed: int = _split_seed()

    def validate(self):
        if self.labels_key is not None and self.labels_path is not None:
            yield "labels_path", "give labels_key (inside the .npz) or labels_path (a .npy), not both"
        if self.shape is not None and any(size <= 0 for size in self.shape):
            yield "shape", f"sizes must be > 0, got {self.shape}"


@attrs.frozen
class ImageFolderDataConfig:
    """``data`` of kind ``image_folder``: PNG and JPEG files under a folder, resized, decoded once and cached."""

    path: str = option(doc="the folder (searched recursively; relative paths start at the working directory)")
    image_size: int | list[int] = option(32, doc="size the images are resized to: an int (square) or [height, width]")
    channels: Literal[1, 3] = option(3, doc="1 (grayscale) or 3 (RGB)")
    labels_from_folders: bool = option(False, doc="class labels from the name of each image's top sub-folder")
    cache_dir: Optional[str] = option(None, doc="where decoded images are cached (default: .foundry-cache next to output_dir)")
    validation_fraction: float = _validation_fraction(0.1)
    seed: int = _split_seed()

    def validate(self):
        sizes = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        if len(sizes) not in (1, 2) or any(size <= 0 for size in sizes):
            yield "image_size", f"expected a size > 0 or [height, width], got {self.image_size}"

    @property
    def height_width(self) -> tuple[int, int]:
        sizes = [self.image_size] if isinstance(self.image_size, int) else self.image_size
        return (sizes[0], sizes[-1])


@attrs.frozen
class WavFolderDataConfig:
    """``data`` of kind ``wav_folder``: PCM WAV files under a folder, mixed down to mono and cut into clips."""

    path: str = option(doc="the folder (searched recursively; relative paths start at the working directory)")
    clip_length: int = option(16000, doc="samples per clip", validator=positive)
    hop_length: Optional[int] = option(None, doc="samples between the starts of two clips (default: clip_length)", validator=positive)
    validation_fraction: float = _validation_fraction(0.1)
    seed: int = _split_seed()


@attrs.frozen
class TonesDataConfig:
    """``data`` of kind ``tones``: synthetic sine tones and chirps (class 0 and 1), seeded, nothing to download."""

    num_samples: int = option(1024, doc="clips generated (training and validation together)", validator=positive)
    clip_length: int = option(4000, doc="samples per clip", validator=positive)
    sample_rate: int = option(8000, doc="samples per second", validator=positive)
    min_frequency: float = option(100.0, doc="lowest frequency in Hz", validator=positive)
    max_frequency: float = option(1000.0, doc="highest frequency in Hz", validator=positive)
    chirp_fraction: float = option(0.5, doc="share of clips that sweep from one frequency to another", validator=probability)
    noise: float = option(0.0, doc="standard deviation of white noise added", validator=non_negative)
    seed: int = option(0, doc="seed of the clips and of the train/validation split")
    validation_fraction: float = _validation_fraction(0.1)

    def validate(self):
        if self.max_frequency < self.min_frequency:
            yield "max_frequency", f"must be >= min_frequency ({self.min_frequency})"
        elif self.max_frequency > self.sample_rate / 2:
            yield "max_frequency", f"must be <= half the sample rate ({self.sample_rate / 2:g} Hz) to be representable"
