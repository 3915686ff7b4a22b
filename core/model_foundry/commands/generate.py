"""``foundry generate CHECKPOINT --prompt TEXT [...]``: continue a prompt with a saved model.

Prints the prompt followed by its continuation. Sampling with ``--temperature`` (0 means
greedy), ``--top-k`` and ``--top-p``; ``--seed`` makes it repeatable, on any ``--device``.
"""

from __future__ import annotations

from model_foundry.commands._device import add_device_argument, device_from
from model_foundry.errors import FoundryError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="generate text from a checkpoint", description=__doc__)
    parser.add_argument("checkpoint", help="a checkpoint directory, e.g. runs/quickstart/final")
    parser.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="tokens to add (default: 100)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 is greedy (default: 0.8)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample among the most likely tokens holding p of the mass")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable samples")
    add_device_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    import torch

    from model_foundry.commands._checkpoint import open_checkpoint
    from model_foundry.factory import load_tokenizer
    from model_foundry.text.modeling import LanguageModel

    if args.max_new_tokens < 1:
        raise FoundryError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise FoundryError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise FoundryError(f"--top-p must be in (0, 1], got {args.top_p}")
    device = device_from(args.device)
    opened = open_checkpoint(args.checkpoint, device)
    model, capabilities = opened.model, opened.capabilities
    if not (capabilities.supports_generation and isinstance(model, LanguageModel) and model.supports_generation):
        if capabilities.sampling:
            raise FoundryError(
                f"{args.checkpoint!r} holds a {model.architecture} model of {opened.modality} data, which does not "
                f"generate text; draw samples with `foundry sample {args.checkpoint} --num-samples N --out STEM`"
            )
        raise FoundryError(
            f"{args.checkpoint!r} holds a {model.architecture} model, which cannot generate text "
            "(it is not a causal language model); use `foundry eval` to score text with it"
        )
    tokenizer = load_tokenizer(args.checkpoint, model)
    # Training put the end-of-text token before every document: start the prompt the same way.
    start = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = start + tokenizer.encode(args.prompt, add_special_tokens=False)
    if not prompt_ids:
        raise FoundryError("the prompt is empty and the tokenizer has no eos token to start from; give --prompt")
    limit = model.max_sequence_length
    if limit is not None and len(prompt_ids) + args.max_new_tokens > limit:
        raise FoundryError(
            f"the prompt ({len(prompt_ids)} tokens) plus --max-new-tokens {args.max_new_tokens} exceeds the model's "
            f"max_sequence_length ({limit}); shorten the prompt or lower --max-new-tokens"
        )
    generator = torch.Generator()
    generator.manual_seed(args.seed) if args.seed is not None else generator.seed()
    output = model.generate(
        torch.tensor([prompt_ids], device=device),
        max_new_tokens=args.max_new_tokens,
        do_sample=args.temperature > 0,
        temperature=args.temperature or 1.0,
        top_k=args.top_k,
        top_p=args.top_p,
        eos_token_id=tokenizer.eos_token_id,
        generator=generator,
    )
    continuation = tokenizer.decode(output[0, len(prompt_ids):].tolist(), skip_special_tokens=True)
    print(args.prompt + continuation)
    return 0
