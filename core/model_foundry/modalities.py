"""How the built-in modalities write samples for a person to look at.

Each writer is a modality's ``write_samples(samples, path_stem, **info) -> list[str]`` (see
:class:`~model_foundry.records.ModalitySpec`): ``samples`` is a batch in the modality's layout
(a tensor or an array), ``path_stem`` a path without extension. Every writer saves the raw
batch as ``<stem>.npy`` (float32) and a view of it:

- image ``(N, C, H, W)`` in [-1, 1], 1 or 3 channels: ``<stem>.png``, a grid upscaled with
  nearest-neighbour so that 8x8 digits stay crisp;
- vector ``(N, D)``: ``<stem>.png``, a scatter of the points (a histogram for D = 1, a 3-D
  scatter of the first three coordinates for D >= 3);
- point_cloud ``(N, P, 3)``: ``<stem>.png``, a 3-D scatter of the first few clouds;
- audio ``(N, T)`` in [-1, 1]: ``<stem>-000.wav``, ... one 16-bit PCM mono WAV per sample
  at ``info["sample_rate"]`` (default 16000).

Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import math
import os
import wave
from typing import Any, Iterator

import numpy as np

DEFAULT_SAMPLE_RATE = 16000
GRID_CELL_PIXELS = 64  # small images are upscaled until a cell is at least this tall or wide
MAX_CLOUDS = 4


def as_array(samples: Any) -> np.ndarray:
    """A batch of samples (tensor on any device, any float dtype, or array) as float32 numpy."""
    if isinstance(samples, np.ndarray):
        return samples.astype(np.float32, copy=False)
    import torch

    if isinstance(samples, torch.Tensor):
        return samples.detach().to("cpu", torch.float32).numpy()
    return np.asarray(samples, dtype=np.float32)


@contextlib.contextmanager
def staged(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` (same extension) that replaces ``path`` if the block succeeds."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, extension = os.path.splitext(path)
    staging = f"{root}.tmp-{os.getpid()}{extension}"
    try:
        yield staging
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def _expect(array: np.ndarray, ndim: int, layout: str, modality: str) -> None:
    if array.ndim != ndim or len(array) == 0:
        raise ValueError(f"{modality} samples must be a non-empty batch of shape {layout}, got {tuple(array.shape)}")


def write_npy(array: np.ndarray, path_stem: str) -> str:
    path = f"{path_stem}.npy"
    with staged(path) as staging, open(staging, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    return path


GRID_GAP_GREY = 96


def image_grid(images: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` in [-1, 1] -> one uint8 ``(rows * H', columns * W', C)`` grid, each image
    upscaled by an integer factor, with 1-pixel gaps in a grey that neither black nor white
    backgrounds hide (digits are white on black: black gaps would run the cells together)."""
    count, channels, height, width = images.shape
    scale = max(1, math.ceil(GRID_CELL_PIXELS / max(height, width)))
    pixels = np.rint((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3).transpose(0, 2, 3, 1)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cell_h, cell_w = height * scale + 1, width * scale + 1
    grid = np.full((rows * cell_h + 1, columns * cell_w + 1, channels), GRID_GAP_GREY, dtype=np.uint8)
    for index in range(count):
        top, left = 1 + (index // columns) * cell_h, 1 + (index % columns) * cell_w
        grid[top : top + cell_h - 1, left : left + cell_w - 1] = pixels[index]
    return grid


def write_images(samples: Any, path_stem: str, **info: Any) -> list[str]:
    """Image samples ``(N, C, H, W)`` in [-1, 1]: a grid PNG and the ``.npy``."""
    from PIL import Image

    images = as_array(samples)
    _expect(images, 4, "(N, C, H, W)", "image")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"image samples must have 1 or 3 channels, got {images.shape[1]} (shape {tuple(images.shape)})")
    grid = image_grid(images)
    path = f"{path_stem}.png"
    with staged(path) as staging:
        Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid).save(staging, format="PNG")
    return [path, write_npy(images, path_stem)]


def new_figure(**kwargs: Any) -> Any:
    # A bare Figure, not pyplot: no global state, no GUI backend, safe from any thread.
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(figure: Any, path: str) -> str:
    figure.tight_layout()
    with staged(path) as staging:
        figure.savefig(staging, format="png")
    return path


def write_vectors(samples: Any, path_stem: str, **info: Any) -> list[str]:
    """Vector samples ``(N, D)``: a scatter PNG (histogram for D = 1, 3-D for D >= 3) and the ``.npy``."""
    points = as_array(samples)
    _expect(points, 2, "(N, D)", "vector")
    dim = points.shape[1]
    figure = new_figure(figsize=(5, 5), dpi=100)
    if dim == 1:
        axes = figure.add_subplot()
        axes.hist(points[:, 0], bins=50)
    elif dim == 2:
        axes = figure.add_subplot()
        axes.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
        axes.set_aspect("equal", adjustable="datalim")
    else:
        axes = figure.add_subplot(projection="3d")
        axes.scatter(points[:, 0], points[:, 1], points[:, 2], s=4, alpha=0.6)
    axes.set_title(f"{len(points)} samples" + (f" (first 3 of {dim} dims)" if dim > 3 else ""))
    return [save_figure(figure, f"{path_stem}.png"), write_npy(points, path_stem)]


def write_point_clouds(samples: Any, path_stem: str, **info: Any) -> list[str]:
    """Point-cloud samples ``(N, P, 3)``: a 3-D scatter PNG of the first few clouds and the ``.npy``."""
    clouds = as_array(samples)
    _expect(clouds, 3, "(N, P, 3)", "point_cloud")
    if clouds.shape[2] != 3:
        raise ValueError(f"point_cloud samples must have 3 coordinates per point, got shape {tuple(clouds.shape)}")
    shown = clouds[:MAX_CLOUDS]
    figure = new_figure(figsize=(4 * len(shown), 4), dpi=100)
    for index, cloud in enumerate(shown):
        axes = figure.add_subplot(1, len(shown), index + 1, projection="3d")
        axes.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], s=3)
        axes.set_title(f"sample {index}")
    return [save_figure(figure, f"{path_stem}.png"), write_npy(clouds, path_stem)]


def pcm16(waveform: np.ndarray) -> bytes:
    """Samples in [-1, 1] as little-endian 16-bit PCM, scaled by 32768 like the WAV reader divides
    (so a round trip is exact to half a step; +1.0 is clipped to 32767)."""
    return np.clip(np.rint(waveform * 32768.0), -32768, 32767).astype("<i2").tobytes()


def write_audio(samples: Any, path_stem: str, **info: Any) -> list[str]:
    """Audio samples ``(N, T)`` in [-1, 1]: one 16-bit mono WAV per sample and the ``.npy``."""
    waveforms = as_array(samples)
    _expect(waveforms, 2, "(N, T)", "audio")
    sample_rate = int(info.get("sample_rate") or DEFAULT_SAMPLE_RATE)
    paths = []
    for index, waveform in enumerate(waveforms):
        path = f"{path_stem}-{index:03d}.wav"
        with staged(path) as staging, wave.open(staging, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(pcm16(waveform))
        paths.append(path)
    return [*paths, write_npy(waveforms, path_stem)]
