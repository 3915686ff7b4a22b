"""Conformance checks that every architecture should pass, whoever publishes it.

Call :func:`check_architecture` from a plugin's tests::

    from model_foundry.testing import check_architecture

    def test_conformance():
        check_architecture("gpt2")

Each check raises ``AssertionError`` with a message naming the architecture, the preset and
what went wrong. :func:`conformance_checks` lists them, for parametrised tests. The checks that
run a model take ``device`` (``check_architecture("gpt2", device="cuda")``): the model is built
there and fed tensors from there; None is the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable

from model_foundry.config import ModelConfig, architecture_schema, find_architecture, load_model_config
from model_foundry.errors import FoundryError
from model_foundry.plugins import Architecture, get_registry

SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog.\n"
    "Pack my box with five dozen liquor jugs.\n"
    "How vexingly quick daft zebras jump!\n"
    "Sphinx of black quartz, judge my vow.\n"
)
# Bigger presets are built on the meta device: their structure is checked without the memory.
MATERIALIZE_BELOW = 20_000_000


def _architecture(name: str) -> Architecture:
    found = find_architecture(name, get_registry())
    if isinstance(found, str):
        raise AssertionError(found)
    return found


def _preset_config(found: Architecture, preset: str, vocab_size: int | None) -> ModelConfig:
    config = load_model_config({"architecture": found.name, "preset": preset}, label=f"preset {preset!r}")
    if vocab_size is not None and hasattr(config.params, "vocab_size") and config.params.vocab_size is None:
        config = config.evolve(vocab_size=vocab_size)
    return config


def _tokenizer(directory: str) -> Any:
    from model_foundry.factory import train_tokenizer
    from model_foundry.text.config import TokenizerConfig

    path = os.path.join(directory, "sample.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(SAMPLE_TEXT * 4)
    return train_tokenizer(TokenizerConfig(tokenizer_type="char", vocab_size=96, min_frequency=1), [path])


def _batch(tokenizer: Any, objective: str, device: Any) -> dict[str, Any]:
    import torch

    from model_foundry.factory import create_collator

    lines = [line for line in SAMPLE_TEXT.splitlines() if line]
    examples = [{"input_ids": tokenizer(line, add_special_tokens=False)["input_ids"][:24]} for line in lines]
    options = {"mlm_probability": 0.3} if objective in {"masked_lm", "hybrid"} else {}
    if objective in {"masked_lm", "hybrid"}:
        options["generator"] = torch.Generator().manual_seed(0)
    batch = create_collator(objective, tokenizer, **options)(examples)
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def check_presets(name: str) -> None:
    """Every preset validates and builds (presets above ~20M parameters on the meta device)."""
    from model_foundry.factory import create_model

    found = _architecture(name)
    assert found.schema.presets, f"{name}: declares no presets"
    for preset in found.schema.presets:
        config = _preset_config(found, preset, vocab_size=1000)
        model = create_model(config, device="meta")
        count = sum(p.numel() for p in model.parameters())
        assert count > 0, f"{name}/{preset}: built a model with no parameters"
        if count < MATERIALIZE_BELOW:
            create_model(config)


def check_training_step(name: str, preset: str = "tiny", device: Any = None) -> None:
    """Forward/backward on a tiny batch from the architecture's collator gives finite loss and gradients."""
    import torch

    from model_foundry.config import objectives_of
    from model_foundry.factory import create_model

    found = _architecture(name)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(tmp)
        config = _preset_config(found, preset, vocab_size=len(tokenizer))
        objectives = objectives_of(config, get_registry())
        assert objectives, f"{name}/{preset}: declares no training objective"
        torch.manual_seed(0)
        model = create_model(config, device=device)
        model.train()
        batch = _batch(tokenizer, objectives[0], device)
        output = model(**batch)
        assert output.loss is not None, f"{name}: forward with labels returned no loss"
        assert output["loss"] is output.loss, f"{name}: output is not readable both as attributes and keys"
        assert torch.isfinite(output.loss), f"{name}: loss is not finite ({output.loss})"
        assert output.logits is not None and output.logits.shape[:2] == batch["input_ids"].shape, (
            f"{name}: logits shape {tuple(output.logits.shape)} does not match input {tuple(batch['input_ids'].shape)}"
        )
        output.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads, f"{name}: no parameter received a gradient"
        assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradients"


def check_save_load(name: str, preset: str = "tiny", device: Any = None) -> None:
    """save -> load rebuilds the same architecture with identical outputs, and no pickle in the directory."""
    import torch

    from model_foundry.checkpoint import load, save
    from model_foundry.factory import create_model

    found = _architecture(name)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(tmp)
        config = _preset_config(found, preset, vocab_size=len(tokenizer))
        torch.manual_seed(0)
        model = create_model(config, device=device).eval()
        input_ids = torch.tensor([tokenizer("Sphinx of black quartz", add_special_tokens=False)["input_ids"]], device=device)
        with torch.no_grad():
            before = model(input_ids=input_ids).logits
        directory = os.path.join(tmp, "checkpoint")
        save(model, directory, tokenizer=tokenizer, metrics={"check": 1.0})
        for file in os.listdir(directory):
            assert not file.endswith((".bin", ".pt", ".pkl", ".pth")), f"{name}: pickle-format file {file} in checkpoint"
        loaded = load(directory, device=device)
        assert type(loaded) is type(model), f"{name}: loaded {type(loaded).__name__}, saved {type(model).__name__}"
        assert loaded.architecture == name
        with torch.no_grad():
            after = loaded(input_ids=input_ids).logits
        assert torch.equal(before, after), f"{name}: outputs differ after save -> load"


def check_generation(name: str, preset: str = "tiny", device: Any = None) -> None:
    """``supports_generation`` is honest: generation runs when claimed, and is refused when not."""
    import torch

    from model_foundry.factory import create_model

    found = _architecture(name)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(tmp)
        config = _preset_config(found, preset, vocab_size=len(tokenizer))
        model = create_model(config, device=device).eval()
        prompt = torch.tensor([tokenizer("The quick", add_special_tokens=False)["input_ids"]], device=device)
        if model.supports_generation:
            out = model.generate(prompt, max_new_tokens=5)
            assert out.shape == (1, prompt.size(1) + 5), f"{name}: generate returned shape {tuple(out.shape)}"
            assert torch.equal(out[:, : prompt.size(1)], prompt), f"{name}: generate did not keep the prompt"
            assert out.device == prompt.device, f"{name}: generate returned tokens on {out.device}, not {prompt.device}"
            sampled = model.generate(prompt, max_new_tokens=3, do_sample=True, top_k=5, top_p=0.9,
                                     generator=torch.Generator().manual_seed(0))
            assert sampled.shape == (1, prompt.size(1) + 3)
        else:
            try:
                model.generate(prompt, max_new_tokens=2)
            except FoundryError:
                pass
            else:
                raise AssertionError(f"{name}: supports_generation is False but generate() ran")
        claimed = found.schema.capabilities.supports_generation
        if claimed:
            assert any(
                create_model(_preset_config(found, p, len(tokenizer)), device="meta").supports_generation
                for p in found.schema.presets
            ), f"{name}: capabilities claim generation but no preset builds a model that generates"


def check_schema(name: str) -> None:
    """The architecture's config exports as JSON Schema, and its presets round-trip through plain data."""
    found = _architecture(name)
    schema = architecture_schema(name)
    json.dumps(schema)
    assert schema["properties"]["architecture"]["const"] == name
    for preset in found.schema.presets:
        config = _preset_config(found, preset, vocab_size=None)
        again = load_model_config(config.to_dict(), label="round trip")
        assert again.params == config.params, f"{name}/{preset}: config does not round-trip through to_dict()"


def check_lazy_listing(name: str) -> None:
    """Listing the architecture in a fresh process imports neither torch nor transformers."""
    code = (
        "import sys, model_foundry\n"
        f"names = [a['name'] for a in model_foundry.list_architectures()]\n"
        f"assert {name!r} in names, names\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules)\n"
        "assert not heavy, f'listing imported {heavy}'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{name}: {result.stderr.strip().splitlines()[-1] if result.stderr else result.stdout}"


CHECKS: list[Callable[..., None]] = [
    check_lazy_listing,
    check_schema,
    check_presets,
    check_training_step,
    check_save_load,
    check_generation,
]


def conformance_checks() -> list[Callable[..., None]]:
    """The checks, in order; each takes the architecture name."""
    return list(CHECKS)


def check_architecture(name: str, preset: str = "tiny", device: Any = None) -> None:
    """Run every conformance check on an installed architecture (``preset`` is the small one to
    train; the checks that run a model run it on ``device``)."""
    import inspect

    for check in CHECKS:
        parameters = inspect.signature(check).parameters
        options = {"preset": preset, "device": device}
        check(name, **{key: value for key, value in options.items() if key in parameters})
