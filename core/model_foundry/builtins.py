"""The core's own contributions — modalities, dataset kinds, tokenizers and collators — registered
through the same hooks as any plugin."""

from __future__ import annotations

from model_foundry.datasets.config import (
    DigitsDataConfig,
    ImageFolderDataConfig,
    NpyDataConfig,
    TonesDataConfig,
    ToyDataConfig,
    WavFolderDataConfig,
)
from model_foundry.extensions import AugmentationConfig, EMAConfig, RegularizationConfig
from model_foundry.plugin import hookimpl
from model_foundry.records import CollatorSpec, DatasetSpec, ExtensionSpec, MetricSpec, ModalitySpec, TokenizerSpec
from model_foundry.text.config import TextDataConfig


@hookimpl
def foundry_tokenizers() -> list[TokenizerSpec]:
    return [
        TokenizerSpec("bpe", "model_foundry.text.tokenization:train_bpe", "byte-level BPE (GPT-2 style)"),
        TokenizerSpec("wordpiece", "model_foundry.text.tokenization:train_wordpiece", "WordPiece (BERT style)"),
        TokenizerSpec("unigram", "model_foundry.text.tokenization:train_unigram", "Unigram LM (SentencePiece style)"),
        TokenizerSpec("sentencepiece", "model_foundry.text.tokenization:train_unigram", "alias of unigram"),
        TokenizerSpec("char", "model_foundry.text.tokenization:train_char", "one token per character"),
    ]


@hookimpl
def foundry_collators() -> list[CollatorSpec]:
    return [
        CollatorSpec("causal_lm", "model_foundry.text.collators:CausalLMCollator", "pad; labels = input ids, -100 on padding"),
        CollatorSpec("masked_lm", "model_foundry.text.collators:MaskedLMCollator", "BERT masking: 80% mask, 10% random, 10% kept"),
    ]


@hookimpl
def foundry_modalities() -> list[ModalitySpec]:
    return [
        ModalitySpec("text", "input_ids", "token ids from a tokenizer", "(sequence,)"),
        ModalitySpec(
            "image", "pixel_values", "float32 pixels scaled to [-1, 1]", "(channels, height, width)",
            "model_foundry.modalities:write_images",
        ),
        ModalitySpec(
            "audio", "input_values", "float32 mono waveform in [-1, 1]", "(time,)", "model_foundry.modalities:write_audio",
        ),
        ModalitySpec("vector", "vectors", "float32 points or feature vectors", "(dim,)", "model_foundry.modalities:write_vectors"),
        ModalitySpec(
            "point_cloud", "points", "float32 sets of 3-D points", "(points, 3)", "model_foundry.modalities:write_point_clouds",
        ),
    ]


@hookimpl
def foundry_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            "text", "text", TextDataConfig, "model_foundry.text.data:load_text_dataset",
            "local text or JSONL files, tokenized once and cached",
        ),
        DatasetSpec(
            "digits", "image", DigitsDataConfig, "model_foundry.datasets.images:load_digits",
            "scikit-learn's bundled 8x8 digits with class labels (pip install 'model-foundry[images]')",
        ),
        DatasetSpec(
            "toy", "vector", ToyDataConfig, "model_foundry.datasets.vectors:load_toy",
            "2-D/3-D toy distributions: moons, circles, 8gaussians, checkerboard, swiss_roll, s_curve",
        ),
        DatasetSpec(
            "image_folder", "image", ImageFolderDataConfig, "model_foundry.datasets.images:load_image_folder",
            "PNG/JPEG files under a folder, resized, optional labels from sub-folders; decoded once and cached",
        ),
        DatasetSpec(
            "npy", "vector", NpyDataConfig, "model_foundry.datasets.npy:load_npy",
            "examples of any array modality (data.modality) from a .npy/.npz file",
        ),
        DatasetSpec(
            "wav_folder", "audio", WavFolderDataConfig, "model_foundry.datasets.audio:load_wav_folder",
            "PCM WAV files under a folder, mixed down to mono and cut into clips",
        ),
        DatasetSpec(
            "tones", "audio", TonesDataConfig, "model_foundry.datasets.audio:load_tones",
            "synthetic sine tones and chirps with class labels, seeded",
        ),
    ]


@hookimpl
def foundry_metrics() -> list[MetricSpec]:
    return [
        MetricSpec("perplexity", "model_foundry.evaluation:perplexity_metric", ("text",), (), "exp(validation loss)"),
        MetricSpec("bits_per_dim", "model_foundry.metrics:bits_per_dim", (), ("likelihood",),
                   "bits per dimension of the validation split (per intensity level for quantised data)"),
        MetricSpec("digits_sample_quality", "model_foundry.metrics:digits_sample_quality", ("image",), ("sampling",),
                   "digits_fid and digits_score of samples against held-out 8x8 digits (a small classifier's features)"),
    ]


@hookimpl
def foundry_extensions() -> list[ExtensionSpec]:
    return [
        ExtensionSpec("ema", EMAConfig, "model_foundry.extensions:ExponentialMovingAverage",
                      "exponential moving average of the weights, used for sampling and saved in checkpoints"),
        ExtensionSpec("augmentation", AugmentationConfig, "model_foundry.extensions:Augmentation",
                      "image flips and shifts, Gaussian noise on vectors"),
        ExtensionSpec("regularization", RegularizationConfig, "model_foundry.extensions:Regularization",
                      "L2 weight penalty, gradient penalty on the inputs"),
    ]
