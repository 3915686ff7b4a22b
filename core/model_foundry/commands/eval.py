"""``foundry eval CHECKPOINT [--data FILE ...] [--set data.KEY=VALUE ...]``: score a saved model.

A text model is scored on text files (``--data``): its loss and perplexity, the files read,
tokenized and cut into blocks like training data with the options of the checkpoint's own
``data`` section (block size, format, JSONL text field) unless overridden, under the
checkpoint's ``training.objective`` (masked models are scored on a fixed, seeded masking).
A directory exported with ``foundry export --to hf`` is scored the same way, with the
defaults of a ``data`` section.

A model of another modality is scored on the validation split of the checkpoint's own
``data`` section (change it with ``--set data.KEY=VALUE``): the validation loss and every
metric of its modality that the model's capabilities allow (bits/dim for likelihood models,
sample quality for image models, ...), with the checkpoint's sampling weights (EMA) when it
has them.
"""

from __future__ import annotations

from typing import Any

from model_foundry.commands._device import add_device_argument, device_from
from model_foundry.commands._output import print_json
from model_foundry.commands.validate import add_set_argument
from model_foundry.errors import FoundryError

TEXT_BATCH_SIZE = 8  # blocks per forward pass
BATCH_SIZE = 64  # examples per forward pass, other modalities


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score a checkpoint: perplexity on text files, or its modality's metrics",
                                   description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint directory, e.g. runs/quickstart/final")
    parser.add_argument("--data", action="append", help="text models: text or JSONL file (repeatable, globs allowed)")
    parser.add_argument("--block-size", type=int, default=None, help="text models: tokens per block (default: the checkpoint's)")
    add_set_argument(parser)
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"examples per forward pass (default: {TEXT_BATCH_SIZE} blocks of text, {BATCH_SIZE} others)")
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="samples drawn by sample-quality metrics (default: 1000)")
    add_device_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    from model_foundry.commands._checkpoint import open_checkpoint

    if args.batch_size is not None and args.batch_size < 1:
        raise FoundryError(f"--batch-size must be >= 1, got {args.batch_size}")
    opened = open_checkpoint(args.checkpoint, device_from(args.device))
    if opened.modality == "text":
        if args.overrides:
            raise FoundryError("--set changes the data of non-text models; a text model is scored on --data files")
        result, summary = _text(args, opened)
    else:
        if args.data or args.block_size is not None:
            option = "--data" if args.data else "--block-size"
            raise FoundryError(
                f"{option} is for text models; this {opened.model.architecture} model of {opened.modality} data is scored "
                "on the validation split of its checkpoint's data section (change it with --set data.KEY=VALUE)"
            )
        result, summary = _modality(args, opened)
    if args.json:
        print_json(result)
    else:
        print(summary)
    return 0


def _text(args, opened: Any) -> tuple[dict[str, Any], str]:
    """Loss and perplexity of a language model on ``--data`` files."""
    import attrs

    from model_foundry.config import TrainingConfig
    from model_foundry.evaluation import eval_collator, perplexity, validation_loss
    from model_foundry.factory import load_tokenizer
    from model_foundry.text.config import TextDataConfig
    from model_foundry.text.data import TokenBlocks, read_documents, resolve_files, tokenize_to_array

    if not args.data:
        raise FoundryError("a text model is scored on text: give --data FILE (text or JSONL; repeatable, globs allowed)")
    model, saved = opened.model, opened.config
    tokenizer = load_tokenizer(opened.directory, model)
    data = _section(TextDataConfig, saved.get("data"), ("format", "text_field", "document_per_line", "block_size"))
    if args.block_size is not None:
        if args.block_size < 1:
            raise FoundryError(f"--block-size must be >= 1, got {args.block_size}")
        data = attrs.evolve(data, block_size=args.block_size)
    training = _section(TrainingConfig, saved.get("training"), ("objective", "mlm_probability", "seed"))
    limit = model.max_sequence_length
    block_size = min(data.block_size, limit) if limit else data.block_size
    files = resolve_files(args.data, "--data")
    tokens = tokenize_to_array(tokenizer, (doc for path in files for doc in read_documents(path, data)))
    blocks = TokenBlocks(tokens, block_size)
    if len(blocks) == 0:
        raise FoundryError(f"the data has {len(tokens)} tokens, fewer than one block of {block_size}; lower --block-size")
    collator = eval_collator(training, model.config, data, "text", tokenizer)
    loss_sum, count = validation_loss(
        model, blocks, collator, batch_size=args.batch_size or TEXT_BATCH_SIZE, device=next(model.parameters()).device
    )
    loss = loss_sum / count
    result = {"eval_loss": loss, "perplexity": perplexity(loss), "tokens": blocks.num_tokens, "blocks": len(blocks)}
    summary = f"eval_loss {loss:.4f} | perplexity {result['perplexity']:.2f} | {blocks.num_tokens:,} tokens in {len(blocks)} blocks"
    return result, summary


def _section(cls: type, saved: object, keys: tuple[str, ...]) -> Any:
    """``cls`` with the saved values of ``keys`` (a checkpoint's config was validated when it was written)."""
    values = {key: saved[key] for key in keys if isinstance(saved, dict) and key in saved}
    return cls(**values)


def _modality(args, opened: Any) -> tuple[dict[str, Any], str]:
    """The validation loss and the modality's metrics on the checkpoint's own validation split."""
    import os

    from model_foundry.commands.sample import sampling_weights_of
    from model_foundry.config import TrainingConfig, load_config
    from model_foundry.datasets import DataContext, load_data
    from model_foundry.evaluation import MetricContext, eval_collator, evaluate
    from model_foundry.training.rundir import data_cache_dir

    model, path = opened.model, opened.config_file
    if path is None or "data" not in opened.config:
        raise FoundryError(
            f"{opened.directory!r} holds no data section (it was saved outside `foundry train`), so there is no "
            f"validation split to score its {model.architecture} model on"
        )
    foreign = [text for text in args.overrides if not text.startswith("data.")]
    if foreign:
        raise FoundryError(f"--set {foreign[0]}: eval changes only the data section (--set data.KEY=VALUE)")
    config = load_config(path, args.overrides, sections=("data", "training"))
    training = config.training or TrainingConfig()
    cache_dir = data_cache_dir(config.data, os.path.abspath(training.output_dir))
    data = load_data(config.data, DataContext(cache_dir, training.seed, None, model.config))
    if data.validation is None or len(data.validation) == 0:
        raise FoundryError(
            f"the data section of {path} has no validation split; give it one, e.g. --set data.validation_fraction=0.1"
        )
    device = next(model.parameters()).device
    batch_size = args.batch_size or BATCH_SIZE
    context = MetricContext(
        device=device, capabilities=opened.capabilities, data_info=data.info, num_samples=args.num_samples,
        batch_size=batch_size, seed=training.seed,
    )
    collator = eval_collator(training, model.config, config.data.params, data.modality, None)
    with sampling_weights_of(opened, device):
        record = evaluate(model, data, collator, context=context, batch_size=batch_size)
    result = {**record, "examples": len(data.validation), "modality": data.modality}
    summary = " | ".join(f"{name} {value:.4f}" for name, value in record.items())
    return result, f"{summary} | {len(data.validation):,} {data.modality} examples (validation split of {path})"
