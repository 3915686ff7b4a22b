"""``foundry eval CHECKPOINT --data FILE [...]``: a saved model's loss and perplexity on a file.

The file is read, tokenized and cut into blocks like training data, with the options of the
checkpoint's own ``data`` section (block size, format, JSONL text field) unless overridden.
The objective is the checkpoint's ``training.objective`` (masked models are scored on a fixed,
seeded masking).
"""

from __future__ import annotations

import os

from model_foundry.commands._device import add_device_argument, device_from
from model_foundry.commands._output import print_json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="perplexity of a checkpoint on a text file", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint directory, e.g. runs/quickstart/final")
    parser.add_argument("--data", required=True, action="append", help="text or JSONL file (repeatable, globs allowed)")
    parser.add_argument("--block-size", type=int, default=None, help="tokens per block (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=8, help="blocks per forward pass (default: 8)")
    add_device_argument(parser)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    import attrs

    from model_foundry.checkpoint import CONFIG_FILE, load, read_yaml_plain
    from model_foundry.errors import FoundryError
    from model_foundry.evaluation import eval_collator, perplexity, validation_loss
    from model_foundry.factory import load_tokenizer
    from model_foundry.sections import TrainingConfig
    from model_foundry.text.config import TextDataConfig
    from model_foundry.text.data import TokenBlocks, read_documents, resolve_files, tokenize_to_array

    model = load(args.checkpoint, device=device_from(args.device))
    tokenizer = load_tokenizer(args.checkpoint)
    saved = read_yaml_plain(os.path.join(args.checkpoint, CONFIG_FILE)) or {}
    data = _section(TextDataConfig, saved.get("data"), ("format", "text_field", "document_per_line", "block_size"))
    if args.block_size is not None:
        if args.block_size < 1:
            raise FoundryError(f"--block-size must be >= 1, got {args.block_size}")
        data = attrs.evolve(data, block_size=args.block_size)
    default_objective = "causal_lm" if model.supports_generation else "masked_lm"
    training = _section(TrainingConfig, saved.get("training"), ("objective", "mlm_probability", "seed"))
    if not saved.get("training"):
        training = attrs.evolve(training, objective=default_objective)
    limit = getattr(model, "max_sequence_length", None)
    block_size = min(data.block_size, limit) if limit else data.block_size
    files = resolve_files(args.data, "--data")
    tokens = tokenize_to_array(tokenizer, (doc for path in files for doc in read_documents(path, data)))
    blocks = TokenBlocks(tokens, block_size)
    if len(blocks) == 0:
        raise FoundryError(f"the data has {len(tokens)} tokens, fewer than one block of {block_size}; lower --block-size")
    collator = eval_collator(training, model.config, data, "text", tokenizer)
    loss_sum, count = validation_loss(
        model, blocks, collator, batch_size=max(1, args.batch_size), device=next(model.parameters()).device
    )
    loss = loss_sum / count
    result = {"eval_loss": loss, "perplexity": perplexity(loss), "tokens": blocks.num_tokens, "blocks": len(blocks)}
    if args.json:
        print_json(result)
    else:
        print(f"eval_loss {loss:.4f} | perplexity {result['perplexity']:.2f} | {blocks.num_tokens:,} tokens in {len(blocks)} blocks")
    return 0


def _section(cls: type, saved: object, keys: tuple[str, ...]) -> object:
    """``cls`` with the saved values of ``keys`` (a checkpoint's config was validated when it was written)."""
    values = {key: saved[key] for key in keys if isinstance(saved, dict) and key in saved}
    return cls(**values)
