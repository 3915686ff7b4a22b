"""Audio dataset kinds: ``wav_folder`` (PCM WAV files) and ``tones`` (synthetic sines and chirps).

Audio is batched as ``input_values``, float32 ``(N, T)`` mono waveforms in [-1, 1]; ``info``
carries ``sample_rate``. WAV files are read with the standard library's ``wave`` module:
8-bit (unsigned), 16, 24 and 32-bit integer PCM, any number of channels (mixed down to mono
by averaging). Nothing is resampled: every file of a folder must have the same sample rate.
"""

from __future__ import annotations

import os
import wave

import numpy as np

from model_foundry.datasets import DataContext, LoadedData
from model_foundry.datasets.arrays import split_arrays
from model_foundry.datasets.config import TonesDataConfig, WavFolderDataConfig
from model_foundry.datasets.files import folder_files
from model_foundry.errors import ConfigError, Problem


def decode_pcm(frames: bytes, sample_width: int) -> np.ndarray:
    """Little-endian integer PCM of ``sample_width`` bytes per sample as float32 in [-1, 1)."""
    if sample_width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if sample_width == 3:  # no numpy dtype: place the three bytes high in an int32
        triples = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        padded = np.zeros((len(triples), 4), dtype=np.uint8)
        padded[:, 1:] = triples
        return padded.view("<i4").ravel().astype(np.float32) / 2.0**31
    dtype = {2: "<i2", 4: "<i4"}[sample_width]
    return np.frombuffer(frames, dtype=dtype).astype(np.float32) / float(2 ** (8 * sample_width - 1))


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """A WAV file as a mono float32 waveform in [-1, 1] and its sample rate."""
    try:
        with wave.open(path, "rb") as source:
            channels, width, rate = source.getnchannels(), source.getsampwidth(), source.getframerate()
            frames = source.readframes(source.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise ConfigError(
            Problem(
                f"cannot read WAV file {path!r} ({exc}); only integer PCM WAV files are read (8, 16, 24 or 32-bit): "
                "convert it, e.g. ffmpeg -i IN -c:a pcm_s16le OUT.wav, or remove it",
                "data.path",
            )
        ) from None
    if width not in (1, 2, 3, 4):
        raise ConfigError(Problem(f"WAV file {path!r} has {8 * width}-bit samples; 8, 16, 24 or 32-bit PCM is read", "data.path"))
    samples = decode_pcm(frames[: len(frames) // (width * channels) * width * channels], width)
    return samples.reshape(-1, channels).mean(axis=1, dtype=np.float32), rate


def clips(waveform: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Every window of ``length`` samples starting each ``hop`` samples (none if the waveform is shorter)."""
    if len(waveform) < length:
        return np.zeros((0, length), dtype=np.float32)
    return np.lib.stride_tricks.sliding_window_view(waveform, length)[::hop]


def load_wav_folder(config: WavFolderDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``wav_folder``: clips of ``clip_length`` samples as ``input_values``."""
    files = folder_files(config.path, (".wav",), "WAV files")
    waveforms = {path: read_wav(path) for path in files}
    rates = {rate for _, rate in waveforms.values()}
    if len(rates) > 1:
        examples = {rate: next(path for path, (_, r) in waveforms.items() if r == rate) for rate in sorted(rates)}
        listed = ", ".join(f"{os.path.basename(path)} at {rate} Hz" for rate, path in examples.items())
        raise ConfigError(
            Problem(
                f"the WAV files have different sample rates ({listed}); nothing is resampled: convert them to one rate "
                "first, e.g. ffmpeg -i IN -ar 16000 OUT.wav",
                "data.path",
            )
        )
    hop = config.hop_length or config.clip_length
    parts = [clips(waveform, config.clip_length, hop) for waveform, _ in waveforms.values()]
    values = np.concatenate(parts).astype(np.float32)
    if len(values) == 0:
        longest = max(len(waveform) for waveform, _ in waveforms.values())
        raise ConfigError(
            Problem(f"every WAV file is shorter than one clip (the longest has {longest} samples); lower it", "data.clip_length")
        )
    info = {"sample_rate": rates.pop(), "clip_length": config.clip_length, "files": len(files)}
    return split_arrays(
        {"input_values": values}, modality="audio", validation_fraction=config.validation_fraction, seed=config.seed,
        info=info,
    )


def tones(config: TonesDataConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(waveforms, labels)``: float32 ``(N, clip_length)`` sines (label 0) and linear chirps (label 1)
    with log-uniform frequencies, random phase and amplitude in [0.3, 0.9]."""
    rng = np.random.default_rng(config.seed)
    count = config.num_samples
    low, high = np.log(config.min_frequency), np.log(config.max_frequency)
    start, end = np.exp(rng.uniform(low, high, count)), np.exp(rng.uniform(low, high, count))
    chirp = rng.uniform(0, 1, count) < config.chirp_fraction
    end = np.where(chirp, end, start)
    phase, amplitude = rng.uniform(0, 2 * np.pi, count), rng.uniform(0.3, 0.9, count)
    time = np.arange(config.clip_length) / config.sample_rate
    duration = config.clip_length / config.sample_rate
    # A linear chirp's phase is the integral of its frequency f(t) = start + (end - start) t / duration.
    angle = 2 * np.pi * (start[:, None] * time + (end - start)[:, None] * time**2 / (2 * duration)) + phase[:, None]
    waveforms = amplitude[:, None] * np.sin(angle) + rng.normal(0.0, 1.0, angle.shape) * config.noise
    return np.clip(waveforms, -1.0, 1.0).astype(np.float32), chirp.astype(np.int64)


def load_tones(config: TonesDataConfig, context: DataContext) -> LoadedData:
    """The loader of dataset kind ``tones``: ``input_values`` and ``class_labels`` (0 tone, 1 chirp)."""
    waveforms, labels = tones(config)
    info = {"sample_rate": config.sample_rate, "clip_length": config.clip_length, "num_classes": 2}
    return split_arrays(
        {"input_values": waveforms, "class_labels": labels}, modality="audio",
        validation_fraction=config.validation_fraction, seed=config.seed, info=info,
    )
