"""The hook specifications: the whole contract between the core and a plugin.

A plugin is a module registered under the ``model_foundry`` entry-point group. It
implements any of the hooks below with :data:`hookimpl` and nothing else. Every hook
takes no arguments and returns a list of records from :mod:`model_foundry.records`;
heavy objects (model code, tokenizer trainers, collators) are named as
``"module:function"`` strings and imported on first use, so that answering a hook is
cheap and never imports torch.

A hook that raises is reported against its plugin by ``foundry plugins`` and
:func:`model_foundry.plugin_errors`; the other plugins are unaffected.
"""

from __future__ import annotations

import pluggy

from model_foundry.records import (
    ArchitectureSchema,
    CheckpointConverter,
    CollatorSpec,
    DatasetSpec,
    Exporter,
    ExtensionSpec,
    MetricSpec,
    ModalitySpec,
    ModelBuilder,
    TokenizerSpec,
    TrainingStep,
)

PROJECT = "model_foundry"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def foundry_config_schemas() -> list[ArchitectureSchema]:
    """Declare architectures and their config schemas.

    Called once, when the registry is first needed (``foundry list``, ``load_config``,
    ``create_model``...). Return a list of :class:`~model_foundry.records.ArchitectureSchema`:
    the architecture's ``name``, its attrs ``config_class``, its ``presets`` (name -> a
    complete set of fields), ``family``, ``description`` and
    :class:`~model_foundry.records.Capabilities` (objectives, generation, modality).

    The config class may define ``validate(self)`` yielding ``(relative.key.path, message)``
    pairs for cross-field checks, ``objectives(self)`` when the objectives it can train
    depend on its values, and ``__foundry_global_defaults__ = ("global_config",
    ("encoder", "decoder"))`` to opt into a block of defaults shared by sub-blocks.
    """


@hookspec
def foundry_model_builders() -> list[ModelBuilder]:
    """Say how to build architectures.

    Called once, with the schemas. Return a list of
    :class:`~model_foundry.records.ModelBuilder`, each naming an architecture and a
    ``"module:function"`` that takes a :class:`~model_foundry.config.ModelConfig` and
    returns a ``torch.nn.Module``. The function is imported only when a model is built.
    For an architecture of several modalities it reads ``model_config.modality`` (a field of
    its config class that :func:`~model_foundry.create_model` sets) and builds for that data.
    """


@hookspec
def foundry_collators() -> list[CollatorSpec]:
    """Contribute data collators (``causal_lm``, ``masked_lm``, ...).

    Called once. Return a list of :class:`~model_foundry.records.CollatorSpec`; its
    ``factory(tokenizer, **options)`` returns a callable from a dataset's batch (for text, a
    list of ``{"input_ids": [...]}`` examples) to a dict of tensors. Chosen by
    ``training.objective`` or :func:`model_foundry.create_collator`. The factory declares the
    options it takes as keyword parameters, and training passes those it has by name:
    ``model_config``, ``data_config``, ``generator`` (a seeded ``torch.Generator`` whose state
    training checkpoints), ``mlm_probability`` and any of ``training.collator_options``.
    """


@hookspec
def foundry_modalities() -> list[ModalitySpec]:
    """Contribute modalities (``text``, ``image``, ``audio``, ``vector``, ``point_cloud``, ...).

    Called once. Return a list of :class:`~model_foundry.records.ModalitySpec`: the modality's
    batch key, its default collator (preprocessing) and how its samples are written for a
    person to look at.
    """


@hookspec
def foundry_datasets() -> list[DatasetSpec]:
    """Contribute dataset kinds (``text``, ``digits``, ``toy``, ``npy``, ``image_folder``, ...).

    Called once. Return a list of :class:`~model_foundry.records.DatasetSpec`, each chosen by
    ``data.kind``, with its own typed config class for the rest of the ``data`` section.
    """


@hookspec
def foundry_metrics() -> list[MetricSpec]:
    """Contribute evaluation metrics (perplexity, bits/dim, sample quality, ...).

    Called once. Return a list of :class:`~model_foundry.records.MetricSpec`; evaluation runs
    those that apply to the data's modality and the model's capabilities.
    """


@hookspec
def foundry_extensions() -> list[ExtensionSpec]:
    """Contribute extensions built beside a model from the ``extensions`` section (EMA, ...).

    Called once. Return a list of :class:`~model_foundry.records.ExtensionSpec`.
    """


@hookspec
def foundry_tokenizers() -> list[TokenizerSpec]:
    """Contribute tokenizer kinds (``bpe``, ``wordpiece``, ``unigram``, ``char``, ...).

    Called once. Return a list of :class:`~model_foundry.records.TokenizerSpec`; its
    ``train(tokenizer_config, files)`` trains a tokenizer on text files and returns a
    ``transformers.PreTrainedTokenizerFast``. Chosen by ``tokenizer.tokenizer_type``.
    """


@hookspec
def foundry_checkpoint_converters() -> list[CheckpointConverter]:
    """Contribute importers of foreign checkpoints (a transformers directory, ...).

    Called once. Return a list of :class:`~model_foundry.records.CheckpointConverter`.
    ``model_foundry.load`` tries them, in turn, on a directory that is not a Model Foundry
    checkpoint.
    """


@hookspec
def foundry_exporters() -> list[Exporter]:
    """Say how to write an architecture's models in foreign formats (a transformers directory, ...).

    Called once. Return a list of :class:`~model_foundry.records.Exporter`, each naming an
    architecture, a format (``"hf"``, ...) and a ``"module:function"``
    ``export(model, directory, tokenizer=None)`` that writes the model (and the tokenizer,
    when the checkpoint has one) into ``directory``. ``foundry export CKPT --to FORMAT OUT``
    picks the exporter of the checkpoint's architecture and format, and makes the write
    atomic around it.
    """


@hookspec
def foundry_training_steps() -> list[TrainingStep]:
    """Replace the default training step for an architecture.

    Called once. Return a list of :class:`~model_foundry.records.TrainingStep`. Only for
    models that need more than one backward pass and one optimizer (GANs, for instance).
    Training then calls ``step(model, batches, context)`` once per optimizer step instead of
    its default step, with the step's micro-batches and a
    :class:`~model_foundry.training.StepContext`; the returned ``loss`` and ``*_loss`` are logged.
    """
