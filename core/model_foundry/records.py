"""The records a plugin hands to the core through its hooks.

They are small frozen attrs classes with no torch in sight, so that answering a
hook never imports model code. Anything heavy is named as a ``"module:attribute"``
string and imported only when it is first used (see :func:`resolve`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Literal, Mapping, Optional

import attrs


def resolve(reference: str | Callable[..., Any]) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute (callables pass through)."""
    if callable(reference):
        return reference
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'package.module:attribute', got {reference!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def _is_reference(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if callable(value):
        return
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError(f"{attribute.name} must be 'package.module:attribute' or a callable, got {value!r}")


@attrs.frozen
class Capabilities:
    """What an architecture can do; shown by ``foundry list``, checked at validation and when a
    model is built (see :mod:`model_foundry.protocol` for the method behind each capability).

    ``objectives`` name the collators it trains with (text: ``causal_lm``, ``masked_lm``, ...;
    empty for models whose batches need no objective-specific collation). ``modality`` is the
    data it models natively; ``modalities`` lists every modality
    ``create_model(config, modality=...)`` can adapt it to (default: just ``modality``).
    """

    objectives: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    supports_generation: bool = False
    modality: str = "text"
    modalities: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    sampling: bool = False
    likelihood: Optional[Literal["exact", "bound"]] = None
    latent: bool = False
    energy: bool = False
    score: bool = False
    conditional: bool = False

    @property
    def supported_modalities(self) -> tuple[str, ...]:
        return self.modalities or (self.modality,)


@attrs.frozen
class ArchitectureSchema:
    """A config schema: answer to :func:`~model_foundry.hookspecs.foundry_config_schemas`.

    ``config_class`` is an attrs class holding the architecture's own fields (everything in
    the ``model`` section besides ``architecture`` and ``preset``). ``presets`` maps a preset
    name to a function with no arguments that returns a ``config_class`` instance (a
    :class:`~model_foundry.presets.Presets` registers them by name). ``default_extensions`` is
    the ``extensions`` section (extension name -> options, plain data) that a config of this
    architecture gets when it has none, e.g. ``{"ema": {"decay": 0.999}}`` for models that
    sample with averaged weights; a config with an ``extensions`` section lists every extension
    it wants (``extensions: {}`` for none).
    """

    name: str
    config_class: type
    family: str = ""
    description: str = ""
    presets: Mapping[str, Callable[[], Any]] = attrs.field(
        factory=dict, validator=attrs.validators.deep_mapping(
            attrs.validators.instance_of(str), attrs.validators.is_callable(), attrs.validators.instance_of(Mapping)
        ),
    )
    capabilities: Capabilities = attrs.field(factory=Capabilities)
    default_extensions: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class ModelBuilder:
    """How to build an architecture: answer to :func:`~model_foundry.hookspecs.foundry_model_builders`.

    ``build`` names a function ``build(model_config) -> torch.nn.Module``.
    """

    architecture: str
    build: str | Callable[..., Any] = attrs.field(validator=_is_reference)


@attrs.frozen
class CollatorSpec:
    """A data collator: answer to :func:`~model_foundry.hookspecs.foundry_collators`.

    ``factory`` names a function ``factory(tokenizer, **options) -> callable`` whose result
    turns a list of ``{"input_ids": [...]}`` examples into a dict of tensors.
    """

    name: str
    factory: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    description: str = ""


@attrs.frozen
class TokenizerSpec:
    """A tokenizer kind: answer to :func:`~model_foundry.hookspecs.foundry_tokenizers`.

    ``train`` names a function ``train(tokenizer_config, files) -> PreTrainedTokenizerFast``.
    """

    name: str
    train: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    description: str = ""


@attrs.frozen
class CheckpointConverter:
    """Imports a foreign checkpoint: answer to :func:`~model_foundry.hookspecs.foundry_checkpoint_converters`.

    ``detect`` names ``detect(path) -> bool``; ``convert`` names ``convert(path) -> model``
    (a model of ``architecture``, with its config and weights).
    """

    name: str
    architecture: str
    detect: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    convert: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    description: str = ""


@attrs.frozen
class Exporter:
    """Writes a model in a foreign format: answer to :func:`~model_foundry.hookspecs.foundry_exporters`.

    ``export`` names ``export(model, directory, tokenizer=None) -> None``, which writes the
    ``architecture``'s ``model`` (and the tokenizer, when given) into ``directory`` in the
    format called ``format`` (``"hf"`` for a transformers directory, ...).
    """

    architecture: str
    format: str
    export: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    description: str = ""


@attrs.frozen
class TrainingStep:
    """A custom training step: answer to :func:`~model_foundry.hookspecs.foundry_training_steps`.

    For models that need more than ``loss.backward(); optimizer.step()`` (several optimizers,
    for instance). ``step`` names ``step(model, batches, context) -> dict[str, float | Tensor]``:
    ``batches`` are the micro-batches of one optimizer step and ``context`` a
    :class:`model_foundry.training.StepContext` (optimizers by group name, ``backward``,
    ``step_optimizer``, ``no_sync``); see docs/training.md.
    """

    architecture: str
    step: str | Callable[..., Any] = attrs.field(validator=_is_reference)


@attrs.frozen
class ModalitySpec:
    """A kind of data: answer to :func:`~model_foundry.hookspecs.foundry_modalities`.

    ``input_key`` is the batch key holding the data (``input_ids``, ``pixel_values``,
    ``input_values``, ``points``, ...); ``sample_shape`` describes one example's layout for
    people (``"(channels, height, width)"``). ``write_samples`` names
    ``write_samples(samples, path_stem, **info) -> list[str]``, which writes a batch of samples
    for a person to look at (an image grid PNG, a scatter PNG, WAV files; always also ``.npy``)
    and returns the paths written. ``collator`` names the default
    ``factory(**options) -> callable`` turning a dataset's batch into model inputs
    (preprocessing such as scaling or dequantisation) when the architecture names no objective.
    """

    name: str
    input_key: str
    description: str = ""
    sample_shape: str = ""
    write_samples: str | Callable[..., Any] | None = attrs.field(default=None)
    collator: str | Callable[..., Any] | None = attrs.field(default=None)


@attrs.frozen
class DatasetSpec:
    """A kind of dataset: answer to :func:`~model_foundry.hookspecs.foundry_datasets`.

    Chosen by ``data.kind``; ``config_class`` is the attrs class of the rest of the ``data``
    section (validated and located like ``model``). ``load`` names
    ``load(data_config, context) -> LoadedData``; see :mod:`model_foundry.datasets`. A kind
    whose config class has a ``modality`` field holds data of the modality that field names
    (``npy``); ``modality`` here is then the default, shown in listings.
    """

    name: str
    modality: str
    config_class: type
    load: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    description: str = ""


@attrs.frozen
class MetricSpec:
    """An evaluation metric: answer to :func:`~model_foundry.hookspecs.foundry_metrics`.

    ``compute`` names ``compute(model, dataset, context) -> dict[str, float]``. It runs at each
    evaluation and in ``foundry eval`` for data of one of ``modalities`` (empty: any) when the
    model has every capability in ``requires`` (e.g. ``("sampling",)``).
    """

    name: str
    compute: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    modalities: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    requires: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    description: str = ""


@attrs.frozen
class ExtensionSpec:
    """Something built beside a model from the ``extensions`` section: answer to
    :func:`~model_foundry.hookspecs.foundry_extensions`.

    ``config_class`` types the extension's block (``extensions.<name>``); ``build`` names
    ``build(model, config) -> extension``. See :mod:`model_foundry.extensions`.
    """

    name: str
    config_class: type
    build: str | Callable[..., Any] = attrs.field(validator=_is_reference)
    description: str = ""
