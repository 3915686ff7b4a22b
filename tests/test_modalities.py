"""The built-in modalities: their records, and the files their sample writers produce."""

from __future__ import annotations

import os
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from model_foundry import modalities
from model_foundry.records import resolve
from model_foundry.registry import get_registry

BATCH_KEYS = {"text": "input_ids", "image": "pixel_values", "audio": "input_values", "vector": "vectors", "point_cloud": "points"}


def test_the_core_registers_five_modalities_with_their_batch_keys_and_writers():
    table = get_registry().modalities
    assert {name: entries[0][0].input_key for name, entries in table.items() if name in BATCH_KEYS} == BATCH_KEYS
    for name in ("image", "audio", "vector", "point_cloud"):
        (spec, plugin), *_ = table[name]
        assert plugin.distribution == "model-foundry" and callable(resolve(spec.write_samples))
    assert table["text"][0][0].write_samples is None


def png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def npy(path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def test_image_grid_is_upscaled_with_gaps_and_values_mapped_to_bytes(tmp_path):
    images = -torch.ones(5, 1, 8, 8)
    images[1] = 1.0  # second cell white
    images[2, 0, 0, 0] = 0.0  # mid grey, upscaled to an 8x8 block
    written = modalities.write_images(images, str(tmp_path / "digits"))
    assert written == [str(tmp_path / "digits.png"), str(tmp_path / "digits.npy")]
    grid = png(written[0])
    # 5 images: 3 columns, 2 rows of 8x8 upscaled 8 times (64 px) with 1-px gaps.
    assert grid.shape == (2 * 65 + 1, 3 * 65 + 1)
    assert (grid[1:65, 66:130] == 255).all() and (grid[1:65, 1:65] == 0).all()
    assert (grid[1:9, 131:139] == 128).all() and grid[9, 131] == 0
    assert (grid[0] == modalities.GRID_GAP_GREY).all() and (grid[:, 65] == modalities.GRID_GAP_GREY).all()
    assert np.array_equal(npy(written[1]), images.numpy())


def test_rgb_images_and_tensors_that_need_converting(tmp_path):
    images = torch.zeros(2, 3, 16, 16, dtype=torch.bfloat16, requires_grad=True)
    with torch.no_grad():
        images[:, 0] = 1.0
    path, raw = modalities.write_images(images * 1, str(tmp_path / "rgb"))
    grid = png(path)
    assert grid.shape == (66, 2 * 65 + 1, 3) and tuple(grid[5, 5]) == (255, 128, 128)
    assert npy(raw).dtype == np.float32 and npy(raw).shape == (2, 3, 16, 16)


def test_vector_and_point_cloud_writers_draw_pngs(tmp_path):
    for dim in (1, 2, 3, 5):
        points = np.random.default_rng(dim).normal(size=(200, dim)).astype(np.float32)
        path, raw = modalities.write_vectors(points, str(tmp_path / f"points-{dim}"))
        assert png(path).shape == (500, 500, 4) and np.array_equal(npy(raw), points)
    clouds = torch.randn(6, 50, 3)
    path, raw = modalities.write_point_clouds(clouds, str(tmp_path / "sub" / "clouds"))
    assert png(path).shape == (400, 4 * 400, 4)  # the first four clouds side by side
    assert np.array_equal(npy(raw), clouds.numpy())


def test_audio_is_one_16_bit_mono_wav_per_sample(tmp_path):
    waves = torch.tensor([[0.0, 0.5, -0.5, 1.0, -1.0, 2.0], [0.25] * 6])
    written = modalities.write_audio(waves, str(tmp_path / "audio"), sample_rate=8000)
    assert [os.path.basename(p) for p in written] == ["audio-000.wav", "audio-001.wav", "audio.npy"]
    with wave.open(written[0], "rb") as first:
        assert (first.getnchannels(), first.getsampwidth(), first.getframerate(), first.getnframes()) == (1, 2, 8000, 6)
        frames = np.frombuffer(first.readframes(6), "<i2").tolist()
    assert frames == [0, 16384, -16384, 32767, -32768, 32767]  # clipped to the 16-bit range
    with wave.open(modalities.write_audio(waves[:1], str(tmp_path / "default"))[0], "rb") as default:
        assert default.getframerate() == 16000
    assert np.array_equal(npy(written[-1]), waves.numpy())


@pytest.mark.parametrize(
    ("writer", "shape", "message"),
    [
        (modalities.write_images, (2, 8, 8), r"\(N, C, H, W\)"),
        (modalities.write_images, (2, 2, 8, 8), "1 or 3 channels"),
        (modalities.write_vectors, (0, 2), r"non-empty batch of shape \(N, D\)"),
        (modalities.write_point_clouds, (2, 5, 2), "3 coordinates"),
        (modalities.write_audio, (2, 1, 10), r"\(N, T\)"),
    ],
)
def test_samples_of_the_wrong_layout_are_a_bug_said_plainly(tmp_path, writer, shape, message):
    with pytest.raises(ValueError, match=message):
        writer(np.zeros(shape, dtype=np.float32), str(tmp_path / "bad"))
    assert os.listdir(tmp_path) == []


def test_writes_are_staged_and_leave_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with modalities.staged(str(target)) as staging:
            assert staging.endswith(".png") and staging != str(target)
            with open(staging, "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.png"]
