"""The ``toy`` dataset kind: 2-D and 3-D point distributions drawn with numpy, seeded.

The usual test beds of density models (as in FFJORD and sklearn's generators), scaled to lie
roughly within [-4, 4]. Distributions made of separate parts label each point with its part
(``class_labels``: the two moons, the two circles, the eight Gaussians), so a conditional
model can be trained on them too.
"""

from __future__ import annotations

import numpy as np

from model_foundry.datasets import DataContext, LoadedData
from model_foundry.datasets.arrays import split_arrays
from model_foundry.datasets.config import ToyDataConfig

# Noise (standard deviation per coordinate) when the config gives none.
DEFAULT_NOISE = {"moons": 0.05, "circles": 0.05, "8gaussians": 0.2, "checkerboard": 0.0, "swiss_roll": 0.1, "s_curve": 0.05}
GAUSSIANS_RADIUS = 3.0
# Distributions made of separate parts, and how many.
NUM_CLASSES = {"moons": 2, "circles": 2, "8gaussians": 8}
CIRCLE_RADII = (3.0, 1.5)


def _moons(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    points = np.where(labels[:, None] == 0, upper, lower)
    return (points - [0.5, 0.25]) * 2.0, labels


def _circles(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    radius = np.asarray(CIRCLE_RADII)[labels]
    return np.stack([np.cos(angle), np.sin(angle)], axis=1) * radius[:, None], labels


def _gaussians(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 8, n)
    angle = labels * (2 * np.pi / 8)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1) * GAUSSIANS_RADIUS, labels


def _checkerboard(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    # Eight unit squares of a 4x4 board, alternating; doubled to span [-4, 4].
    x = rng.uniform(-2, 2, n)
    y = rng.uniform(0, 1, n) - 2 * rng.integers(0, 2, n) + np.floor(x) % 2
    return np.stack([x, y], axis=1) * 2.0, None


def _swiss_roll(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    turn = 1.5 * np.pi * (1 + 2 * rng.uniform(0, 1, n))
    height = rng.uniform(-1, 1, n) * 2.0
    x, z = turn * np.cos(turn) / 5, turn * np.sin(turn) / 5
    return (np.stack([x, z], axis=1) if dim == 2 else np.stack([x, height, z], axis=1)), None


def _s_curve(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    turn = 3 * np.pi * (rng.uniform(0, 1, n) - 0.5)
    height = rng.uniform(-1, 1, n) * 2.0
    x, z = np.sin(turn) * 2, np.sign(turn) * (np.cos(turn) - 1) * 2
    return (np.stack([x, z], axis=1) if dim == 2 else np.stack([x, height, z], axis=1)), None


DISTRIBUTIONS = {
    "moons": _moons, "circles": _circles, "8gaussians": _gaussians,
    "checkerboard": _checkerboard, "swiss_roll": _swiss_roll, "s_curve": _s_curve,
}


def toy_points(config: ToyDataConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """``(points, labels_or_None)``: ``config.num_samples`` points of shape ``(N, dim)`` in float32."""
    rng = np.random.default_rng(config.seed)
    points, labels = DISTRIBUTIONS[config.name](config.num_samples, config.dim, rng)
    noise = DEFAULT_NOISE[config.name] if config.noise is None else config.noise
    points = points + rng.normal(0.0, 1.0, points.shape) * noise
    return points.astype(np.float32), None if labels is None else labels.astype(np.int64)


def load_toy(config: ToyDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``toy``: ``vectors`` (and ``class_labels`` where the parts are distinct)."""
    points, labels = toy_points(config)
    arrays = {"vectors": points} if labels is None else {"vectors": points, "class_labels": labels}
    info = {"distribution": config.name, "dim": config.dim}
    if labels is not None:
        info["num_classes"] = NUM_CLASSES[config.name]
    return split_arrays(arrays, modality="vector", validation_fraction=config.validation_fraction, seed=config.seed, info=info)
