"""The built-in dataset kinds other than text: digits, toy, npy, image_folder, wav_folder, tones."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import wave
from importlib import metadata

import numpy as np
import pytest
import torch

from model_foundry.config import data_modality, parse_yaml, structure
from model_foundry.datasets import DataContext, LoadedData, load_data
from model_foundry.datasets import images as images_module
from model_foundry.datasets.arrays import ArrayDataset, split_arrays
from model_foundry.datasets.audio import decode_pcm
from model_foundry.errors import ConfigError, FoundryError
from model_foundry.modalities import write_audio
from model_foundry.registry import get_registry


def section(text: str):
    return structure(parse_yaml(textwrap.dedent(text)), ("data",)).data


def load(text: str, cache_dir) -> LoadedData:
    return load_data(section(text), DataContext(cache_dir=str(cache_dir)))


def problem_of(caught) -> str:
    (problem,) = caught.value.problems
    return f"{problem.path}: {problem.message}"


def everything(loaded: LoadedData, key: str) -> np.ndarray:
    parts = [loaded.train.arrays[key]] + ([loaded.validation.arrays[key]] if loaded.validation is not None else [])
    return np.concatenate(parts)


# --- arrays and splits ------------------------------------------------------------------------


def test_array_dataset_batches_the_rows_asked_for_as_tensors():
    data = ArrayDataset({"vectors": np.arange(20, dtype=np.float32).reshape(10, 2), "class_labels": np.arange(10)})
    batch = data.batch([7, 2, 2])
    assert len(data) == 10 and set(batch) == {"vectors", "class_labels"}
    assert isinstance(batch["vectors"], torch.Tensor) and batch["vectors"].dtype == torch.float32
    assert batch["vectors"].tolist() == [[14, 15], [4, 5], [4, 5]] and batch["class_labels"].tolist() == [7, 2, 2]
    assert data.batch(torch.tensor([1]))["class_labels"].tolist() == [1]
    with pytest.raises(ValueError, match="one length"):
        ArrayDataset({"a": np.zeros(3), "b": np.zeros(4)})


def test_split_is_seeded_disjoint_and_keeps_order():
    arrays = {"vectors": np.arange(100, dtype=np.float32)[:, None]}
    first = split_arrays(arrays, modality="vector", validation_fraction=0.2, seed=3)
    again = split_arrays(arrays, modality="vector", validation_fraction=0.2, seed=3)
    other = split_arrays(arrays, modality="vector", validation_fraction=0.2, seed=4)
    train, held = first.train.arrays["vectors"][:, 0], first.validation.arrays["vectors"][:, 0]
    assert len(train) == 80 and len(held) == 20 and not set(train) & set(held)
    assert sorted(np.concatenate([train, held])) == list(range(100))
    assert list(train) == sorted(train) and list(held) == sorted(held)
    assert np.array_equal(held, again.validation.arrays["vectors"][:, 0])
    assert not np.array_equal(held, other.validation.arrays["vectors"][:, 0])
    assert split_arrays(arrays, modality="vector", validation_fraction=0.0, seed=3).validation is None
    assert first.unit == "samples" and first.units_per_example == 1


def test_a_fraction_that_empties_a_split_is_a_located_error():
    with pytest.raises(ConfigError) as caught:
        split_arrays({"vectors": np.zeros((3, 2))}, modality="vector", validation_fraction=0.1, seed=0)
    assert problem_of(caught).startswith("data.validation_fraction: 3 example(s) with validation_fraction 0.1")


# --- digits -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load("data: {kind: digits}", tmp_path_factory.mktemp("cache"))


def test_digits_keys_shapes_ranges_and_split(digits):
    assert digits.modality == "image" and len(digits.train) == 1438 and len(digits.validation) == 359
    batch = digits.train.batch(range(64))
    assert batch["pixel_values"].shape == (64, 1, 8, 8) and batch["pixel_values"].dtype == torch.float32
    assert batch["class_labels"].shape == (64,) and batch["class_labels"].dtype == torch.int64
    pixels = everything(digits, "pixel_values")
    assert pixels.min() == -1.0 and pixels.max() == 1.0
    assert len(np.unique(pixels)) == 17  # intensities 0..16, evenly spaced
    assert sorted(np.unique(everything(digits, "class_labels"))) == list(range(10))
    assert dict(digits.info) == {"num_classes": 10, "image_shape": (1, 8, 8), "levels": 17}


def test_digits_split_is_fixed_by_its_seed(digits, tmp_path):
    again = load("data: {kind: digits}", tmp_path)
    assert np.array_equal(again.validation.arrays["class_labels"], digits.validation.arrays["class_labels"])
    reseeded = load("data: {kind: digits, seed: 1, validation_fraction: 0.5}", tmp_path)
    assert len(reseeded.validation) == 898
    assert not np.array_equal(reseeded.validation.arrays["class_labels"][:359], digits.validation.arrays["class_labels"])


def test_digits_read_from_the_file_equal_scikit_learns_own_loader(digits, tmp_path, monkeypatch):
    # Moving the file makes the loader fall back to scikit-learn's load_digits.
    monkeypatch.setattr(images_module, "DIGITS_FILE", "sklearn/nowhere/digits.csv.gz")
    moved = load("data: {kind: digits}", tmp_path)
    for split in ("train", "validation"):
        for key in ("pixel_values", "class_labels"):
            assert np.array_equal(getattr(moved, split).arrays[key], getattr(digits, split).arrays[key])


def test_digits_without_scikit_learn_say_what_to_install(tmp_path, monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(images_module.metadata, "distribution", missing)
    with pytest.raises(FoundryError, match=r"pip install 'model-foundry\[images\]'"):
        load("data: {kind: digits}", tmp_path)


# --- toy --------------------------------------------------------------------------------------


def toy(tmp_path, name, **options):
    fields = ", ".join(f"{key}: {value}" for key, value in {"name": name, "num_samples": 2000, **options}.items())
    loaded = load(f"data: {{kind: toy, {fields}}}", tmp_path)
    return everything(loaded, "vectors"), (everything(loaded, "class_labels") if "class_labels" in loaded.train.arrays else None)


def test_moons_are_two_half_circles_one_per_label(tmp_path):
    points, labels = toy(tmp_path, "moons")
    assert points.shape == (2000, 2) and points.dtype == np.float32 and set(labels) == {0, 1}
    for label, centre, upper in ((0, (-1.0, -0.5), True), (1, (1.0, 0.5), False)):
        part = points[labels == label]
        radius = np.linalg.norm(part - centre, axis=1)
        assert abs(np.median(radius) - 2.0) < 0.1 and 0.03 < np.std(radius) < 0.08  # the default noise, 0.05
        assert ((part[:, 1] > centre[1] - 0.3) if upper else (part[:, 1] < centre[1] + 0.3)).all()


def test_eight_gaussians_have_eight_modes_on_a_circle(tmp_path):
    points, labels = toy(tmp_path, "8gaussians")
    angles = np.arange(8) * np.pi / 4
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 3.0
    nearest = np.argmin(np.linalg.norm(points[:, None] - centres[None], axis=2), axis=1)
    assert np.array_equal(nearest, labels) and np.bincount(labels).min() > 150


def test_circles_checkerboard_swiss_roll_and_s_curve(tmp_path):
    points, labels = toy(tmp_path, "circles", noise=0)
    assert np.allclose(np.linalg.norm(points, axis=1), np.where(labels == 0, 3.0, 1.5), atol=1e-5)
    points, labels = toy(tmp_path, "checkerboard")
    assert labels is None and np.abs(points).max() <= 4.0
    assert ((np.floor(points[:, 0] / 2) + np.floor(points[:, 1] / 2)) % 2 == 0).all()
    roll, _ = toy(tmp_path, "swiss_roll", dim=3, noise=0)
    radius = np.linalg.norm(roll[:, [0, 2]], axis=1)
    assert roll.shape == (2000, 3) and radius.min() >= 1.5 * np.pi / 5 - 1e-4 and radius.max() <= 4.5 * np.pi / 5 + 1e-4
    flat, _ = toy(tmp_path, "swiss_roll", noise=0)
    assert flat.shape == (2000, 2) and np.allclose(np.linalg.norm(flat, axis=1), radius, atol=1e-5)
    curve, _ = toy(tmp_path, "s_curve", dim=3)
    assert curve.shape == (2000, 3)


def test_toy_points_are_seeded(tmp_path):
    first, _ = toy(tmp_path, "moons", seed=1)
    again, _ = toy(tmp_path, "moons", seed=1)
    other, _ = toy(tmp_path, "moons", seed=2)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_toy_config_errors_are_located():
    with pytest.raises(ConfigError) as caught:
        section("data:\n  kind: toy\n  name: moons\n  dim: 3\n")
    assert "<string>:4:8: data.dim: moons is planar; dim 3 exists for swiss_roll, s_curve" in str(caught.value)
    with pytest.raises(ConfigError, match="'moon' is not one of.*did you mean 'moons'"):
        section("data: {kind: toy, name: moon}")


# --- npy --------------------------------------------------------------------------------------


def test_npy_images_are_scaled_and_given_a_channel(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 6, 5), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    np.save(tmp_path / "images.npy", images)
    loaded = load(f"data: {{kind: npy, path: {tmp_path / 'images.npy'}, modality: image, validation_fraction: 0}}", tmp_path)
    pixels = loaded.train.arrays["pixel_values"]
    assert loaded.modality == "image" and pixels.shape == (30, 1, 6, 5) and pixels.dtype == np.float32
    assert np.allclose(pixels[:, 0], images / 127.5 - 1.0, atol=1e-6) and pixels.min() == -1.0 and pixels.max() == 1.0
    assert loaded.info["levels"] == 256 and loaded.info["image_shape"] == (1, 6, 5)


def test_npz_arrays_labels_channels_last_and_audio(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=rgb, labels=np.arange(20) % 4)
    loaded = load(
        f"data: {{kind: npy, path: {tmp_path / 'set.npz'}, key: images, labels_key: labels, modality: image, "
        "channels_last: true, shape: [3, 4, 4], validation_fraction: 0}", tmp_path,
    )
    assert np.allclose(loaded.train.arrays["pixel_values"], rgb.transpose(0, 3, 1, 2) / 127.5 - 1.0, atol=1e-6)
    assert loaded.train.arrays["class_labels"].dtype == np.int64 and loaded.info["num_classes"] == 4
    np.save(tmp_path / "audio.npy", np.array([[-32768, 0, 16384]] * 10, dtype=np.int16))
    np.save(tmp_path / "labels.npy", np.arange(10))
    audio = load(
        f"data: {{kind: npy, path: {tmp_path / 'audio.npy'}, labels_path: {tmp_path / 'labels.npy'}, modality: audio, "
        "sample_rate: 8000}", tmp_path,
    )
    assert audio.modality == "audio" and audio.info["sample_rate"] == 8000 and audio.info["num_classes"] == 10
    assert audio.train.arrays["input_values"][0].tolist() == [-1.0, 0.0, 0.5]
    assert len(audio.train) == 9 and len(audio.validation) == 1
    np.save(tmp_path / "clouds.npy", np.zeros((10, 7, 3), dtype=np.float64))
    clouds = load(f"data: {{kind: npy, path: {tmp_path / 'clouds.npy'}, modality: point_cloud}}", tmp_path)
    assert clouds.train.arrays["points"].shape == (9, 7, 3) and clouds.train.arrays["points"].dtype == np.float32


def test_npy_modality_decides_the_data_modality():
    registry = get_registry()
    assert data_modality(section("data: {kind: npy, path: x.npy, modality: point_cloud}"), registry) == "point_cloud"
    assert data_modality(section("data: {kind: npy, path: x.npy}"), registry) == "vector"
    assert data_modality(section("data: {kind: digits}"), registry) == "image"


def npy_error(tmp_path, array, options="modality: vector", name="x.npy") -> str:
    if array is not None:
        (np.savez if name.endswith(".npz") else np.save)(tmp_path / name, *([array] if not isinstance(array, dict) else []), **(array if isinstance(array, dict) else {}))
    with pytest.raises(ConfigError) as caught:
        load(f"data: {{kind: npy, path: {tmp_path / name}, {options}}}", tmp_path)
    return problem_of(caught)


def test_npy_wrong_shape_names_both_shapes(tmp_path):
    message = npy_error(tmp_path, np.zeros((10, 28, 28), dtype=np.uint8), "modality: image, shape: [1, 32, 32]")
    assert message.startswith("data.shape:") and "(1, 28, 28) (stored as (28, 28))" in message and "(1, 32, 32)" in message
    message = npy_error(tmp_path, np.zeros((10, 5)), "modality: vector, shape: [4]")
    assert message.startswith("data.shape:") and "shape (5,)" in message and "expects (4,)" in message
    message = npy_error(tmp_path, np.zeros((10, 5, 2)), "modality: point_cloud")
    assert message.startswith("data.modality:") and "(5, 2)" in message and "(points, 3)" in message


@pytest.mark.parametrize(
    ("array", "options", "name", "expected"),
    [
        (None, "modality: vector", "missing.npy", "data.path: file not found"),
        (np.array([1.5, 2.0] * 5, dtype=np.float32).reshape(5, 2), "modality: audio", "x.npy", "data.path:"),
        (np.full((4, 3, 2, 2), 2.0), "modality: image", "x.npy", "values in [2, 2]; floats must be scaled to [-1, 1]"),
        (np.zeros((4, 8), dtype=np.int32), "modality: audio", "x.npy", "store int16 or floats in [-1, 1]"),
        ({"a": np.zeros((4, 2)), "b": np.zeros(4)}, "modality: vector", "x.npz", "data.key: "),
        ({"a": np.zeros((4, 2))}, "modality: vector, key: c", "x.npz", "data.key: "),
        ({"a": np.zeros((4, 2))}, "modality: vector, labels_key: a", "x.npz", "data.labels_key: class labels must be 4 integers"),
        ({"a": np.zeros((4, 2)), "y": np.array([0, -1, 2, 3])}, "modality: vector, key: a, labels_key: y", "x.npz", "data.labels_key: class labels must be >= 0, got -1"),
        (np.array(["a", "b"]), "modality: vector", "x.npy", "holds <U1 values; expected real numbers"),
    ],
)
def test_npy_errors_are_located_and_say_what_to_do(tmp_path, array, options, name, expected):
    assert expected in npy_error(tmp_path, array, options, name)


def test_npy_refuses_pickles_and_non_numpy_files(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    assert "holds Python objects" in npy_error(tmp_path, None, "modality: vector", "objects.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    assert "is not a .npy or .npz file; save arrays with numpy.save" in npy_error(tmp_path, None, "modality: vector", "text.npy")
    with pytest.raises(ConfigError, match="labels_path: give labels_key"):
        section("data: {kind: npy, path: x.npz, labels_key: y, labels_path: y.npy}")


# --- image_folder -----------------------------------------------------------------------------


def make_images(root, layout):
    from PIL import Image

    for index, relative in enumerate(layout):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        value = (index * 40) % 256
        Image.new("RGB", (12, 9), (value, 255 - value, 128)).save(path)


def test_image_folder_resizes_labels_and_caches(tmp_path):
    folder = tmp_path / "pictures"
    make_images(folder, ["cat/a.png", "dog/b.JPG", "cat/deep/c.jpeg", "dog/d.png", "cat/e.png"])
    (folder / "cat" / "notes.txt").write_text("ignored")
    options = f"{{kind: image_folder, path: {folder}, image_size: [6, 4], channels: 1, labels_from_folders: true, validation_fraction: 0}}"
    loaded = load(f"data: {options}", tmp_path / "cache")
    pixels = loaded.train.arrays["pixel_values"]
    assert loaded.modality == "image" and pixels.shape == (5, 1, 6, 4) and pixels.dtype == np.float32
    assert -1.0 <= pixels.min() and pixels.max() <= 1.0 and loaded.cache_hits == 0
    assert loaded.train.arrays["class_labels"].tolist() == [0, 0, 0, 1, 1]  # cat/a, cat/deep/c, cat/e, dog/b, dog/d
    assert loaded.info["class_names"] == ["cat", "dog"] and loaded.info["image_shape"] == (1, 6, 4)
    again = load(f"data: {options}", tmp_path / "cache")
    assert again.cache_hits == 1 and np.array_equal(again.train.arrays["pixel_values"], pixels)
    os.utime(folder / "dog" / "d.png", ns=(1, 1))
    assert load(f"data: {options}", tmp_path / "cache").cache_hits == 0
    rgb = load(f"data: {{kind: image_folder, path: {folder}, image_size: 5, validation_fraction: 0}}", tmp_path / "cache")
    assert rgb.train.arrays["pixel_values"].shape == (5, 3, 5, 5) and "class_labels" not in rgb.train.arrays


def test_image_folder_turns_photos_upright(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    photo = Image.new("L", (8, 4), 0)
    photo.paste(255, (0, 0, 4, 4))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show it rotated 90 degrees clockwise
    photo.save(folder / "turned.jpg", exif=exif, quality=100)
    loaded = load(f"data: {{kind: image_folder, path: {folder}, image_size: [8, 4], channels: 1, validation_fraction: 0}}", tmp_path)
    pixels = loaded.train.arrays["pixel_values"][0, 0]
    assert pixels[:3].mean() > 0.8 and pixels[5:].mean() < -0.8  # upright: the white half is on top


def test_image_folder_errors_name_the_folder_or_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ConfigError) as caught:
        load(f"data: {{kind: image_folder, path: {empty}}}", tmp_path / "cache")
    assert problem_of(caught).startswith(f"data.path: no PNG or JPEG images in {str(empty)!r}")
    with pytest.raises(ConfigError, match="not found"):
        load(f"data: {{kind: image_folder, path: {tmp_path / 'nowhere'}}}", tmp_path / "cache")
    broken = tmp_path / "broken"
    make_images(broken, ["a.png"])
    (broken / "b.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(ConfigError) as caught:
        load(f"data: {{kind: image_folder, path: {broken}}}", tmp_path / "cache")
    assert problem_of(caught).startswith(f"data.path: cannot read image {str(broken / 'b.png')!r}")
    with pytest.raises(ConfigError) as caught:
        load(f"data: {{kind: image_folder, path: {broken}, labels_from_folders: true}}", tmp_path / "cache")
    assert problem_of(caught).startswith(f"data.labels_from_folders: {str(broken / 'a.png')!r} lies directly in")


# --- audio ------------------------------------------------------------------------------------


def write_pcm(path, frames: bytes, *, width: int, channels: int = 1, rate: int = 8000):
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)


def test_wav_round_trip_through_the_audio_writer(tmp_path):
    folder = tmp_path / "sounds"
    waves = np.sin(np.linspace(0, 40, 1000, dtype=np.float32))[None].repeat(3, 0) * np.array([[0.2], [0.5], [0.9]], dtype=np.float32)
    written = write_audio(torch.from_numpy(waves), str(folder / "take"), sample_rate=8000)
    assert [os.path.basename(p) for p in written] == ["take-000.wav", "take-001.wav", "take-002.wav", "take.npy"]
    loaded = load(f"data: {{kind: wav_folder, path: {folder}, clip_length: 1000, validation_fraction: 0}}", tmp_path)
    assert loaded.modality == "audio" and loaded.info["sample_rate"] == 8000
    values = loaded.train.arrays["input_values"]
    assert values.shape == (3, 1000) and values.dtype == np.float32
    assert np.abs(values - waves).max() <= 0.5 / 32768 + 1e-7
    clipped = load(f"data: {{kind: wav_folder, path: {folder}, clip_length: 300, hop_length: 200, validation_fraction: 0}}", tmp_path)
    assert len(clipped.train) == 3 * 4  # starts 0, 200, 400, 600 in each 1000-sample file
    assert np.array_equal(clipped.train.arrays["input_values"][1], values[0, 200:500])


def test_pcm_widths_and_stereo_mix_down(tmp_path):
    assert decode_pcm(bytes([0, 128, 255]), 1).tolist() == [-1.0, 0.0, 127 / 128]
    assert decode_pcm(np.array([-32768, 16384], "<i2").tobytes(), 2).tolist() == [-1.0, 0.5]
    assert decode_pcm(bytes([0, 0, 0x80, 0, 0, 0x40]), 3).tolist() == [-1.0, 0.5]
    assert decode_pcm(np.array([-(2**31), 2**30], "<i4").tobytes(), 4).tolist() == [-1.0, 0.5]
    folder = tmp_path / "stereo"
    folder.mkdir()
    write_pcm(folder / "s.wav", np.array([16384, 0] * 8, "<i2").tobytes(), width=2, channels=2)
    loaded = load(f"data: {{kind: wav_folder, path: {folder}, clip_length: 8, validation_fraction: 0}}", tmp_path)
    assert loaded.train.arrays["input_values"].tolist() == [[0.25] * 8]


def test_wav_folder_errors(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_pcm(folder / "a.wav", bytes(200), width=2, rate=8000)
    write_pcm(folder / "b.wav", bytes(200), width=2, rate=16000)
    with pytest.raises(ConfigError) as caught:
        load(f"data: {{kind: wav_folder, path: {folder}, clip_length: 10}}", tmp_path)
    assert "a.wav at 8000 Hz, b.wav at 16000 Hz" in problem_of(caught) and "resampled" in problem_of(caught)
    os.remove(folder / "b.wav")
    with pytest.raises(ConfigError) as caught:
        load(f"data: {{kind: wav_folder, path: {folder}, clip_length: 1000}}", tmp_path)
    assert problem_of(caught).startswith("data.clip_length: every WAV file is shorter than one clip (the longest has 100 samples)")
    (folder / "c.wav").write_text("not audio")
    with pytest.raises(ConfigError) as caught:
        load(f"data: {{kind: wav_folder, path: {folder}, clip_length: 10}}", tmp_path)
    assert problem_of(caught).startswith(f"data.path: cannot read WAV file {str(folder / 'c.wav')!r}")
    silent = tmp_path / "silent"
    silent.mkdir()
    with pytest.raises(ConfigError, match="data.path: no WAV files in"):
        load(f"data: {{kind: wav_folder, path: {silent}}}", tmp_path)


def test_tones_are_seeded_sines_and_chirps_in_range(tmp_path):
    options = "{kind: tones, num_samples: 64, clip_length: 2000, sample_rate: 8000, min_frequency: 200, max_frequency: 800, validation_fraction: 0}"
    loaded = load(f"data: {options}", tmp_path)
    values, labels = loaded.train.arrays["input_values"], loaded.train.arrays["class_labels"]
    assert values.shape == (64, 2000) and values.dtype == np.float32 and np.abs(values).max() <= 0.9
    assert set(labels.tolist()) == {0, 1} and loaded.info == {"sample_rate": 8000, "clip_length": 2000, "num_classes": 2}
    spectrum = np.abs(np.fft.rfft(values[labels == 0], axis=1))
    peaks = np.argmax(spectrum, axis=1) * 8000 / 2000
    assert peaks.min() >= 200 - 4 and peaks.max() <= 800 + 4
    halves = np.abs(np.fft.rfft(values[:, :1000], axis=1)), np.abs(np.fft.rfft(values[:, 1000:], axis=1))
    drift = np.abs(np.argmax(halves[0], axis=1) - np.argmax(halves[1], axis=1)) * 8000 / 1000
    assert drift[labels == 0].max() <= 8 and np.median(drift[labels == 1]) > 50  # chirps sweep, tones hold
    assert np.array_equal(values, load(f"data: {options}", tmp_path).train.arrays["input_values"])
    with pytest.raises(ConfigError, match="max_frequency: must be <= half the sample rate"):
        section("data: {kind: tones, sample_rate: 1000, max_frequency: 600}")


# --- through the command line -----------------------------------------------------------------


def foundry(*args, cwd):
    return subprocess.run([sys.executable, "-m", "model_foundry.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_validate_locates_a_tokenizer_with_image_data_and_an_unknown_kind(tmp_path):
    config = tmp_path / "digits.yaml"
    config.write_text("data:\n  kind: digits\ntokenizer:\n  vocab_size: 100\n")
    result = foundry("validate", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{config}:3:1: tokenizer: a tokenizer belongs to text, and data.kind 'digits' is image data" in result.stderr
    config.write_text("data:\n  kind: digit\n")
    result = foundry("validate", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{config}:2:9: data.kind: unknown dataset kind 'digit'; did you mean 'digits'?" in result.stderr


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("{kind: toy}", "data.kind 'toy' is vector"),
        ("{kind: npy, path: x.npy, modality: audio}", "data.kind 'npy' is audio"),
    ],
)
def test_data_of_a_modality_the_architecture_does_not_model_is_located(data, expected):
    text = f"model:\n  architecture: gpt2\n  preset: tiny\ndata: {data}\n"
    with pytest.raises(ConfigError) as caught:
        structure(parse_yaml(text), ("model", "data"))
    assert str(caught.value).startswith(f"<string>:4:14: data.kind: gpt2 models text data, and {expected}; use a dataset kind of its modality (text)")
