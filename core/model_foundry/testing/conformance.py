"""Conformance checks that every architecture should pass, whoever publishes it.

Call :func:`check_architecture` from a plugin's tests::

    from model_foundry.testing import check_architecture

    def test_conformance():
        check_architecture("gpt2")

Each check raises ``AssertionError`` with a message naming the architecture, the preset and
what went wrong. :func:`conformance_checks` lists them, for parametrised tests. The checks that
run a model take ``device`` (``check_architecture("gpt2", device="cuda")``): the model is built
there and fed tensors from there; None is the CPU.

The checks follow what the architecture declares. Every architecture: listing stays light,
the schema exports, every preset builds, a training step gives finite loss and gradients, and
save -> load gives identical outputs. Language models (text) are fed a tokenized sentence
batch from their objective's collator; models of another modality a tiny fixture batch made
in code for that modality (:func:`fixture_batch`: blob images, clustered points, tones,
spheres), on which a few optimizer steps must lower the loss. Then, by capability:

- ``sampling``: ``sample`` returns float32 samples in the modality's layout, the same ones for
  the same seed, class-conditioned ones for ``conditions``, and the same after save -> load;
- ``likelihood``: ``log_prob`` is finite, one value per example, and (``"exact"``) the same
  for an example whatever batch it is in (a bound: the same under the same torch seed);
- ``latent``: ``decode(encode(batch))`` has the shape of the batch;
- ``energy`` / ``score``: one finite energy per example / a finite gradient shaped like the data;
- text ``generation``: claimed only when the model generates, and then it keeps the prompt.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable

from model_foundry.config import ModelConfig, architecture_schema, load_model_config
from model_foundry.errors import FoundryError
from model_foundry.registry import Architecture, find_architecture, get_registry
from model_foundry.text.config import has_vocabulary

SAMPLE_TEXT = (
    "The quick brown fox jumps over the lazy dog.\n"
    "Pack my box with five dozen liquor jugs.\n"
    "How vexingly quick daft zebras jump!\n"
    "Sphinx of black quartz, judge my vow.\n"
)
# Bigger presets are built on the meta device: their structure is checked without the memory.
MATERIALIZE_BELOW = 20_000_000
FIXTURE_SIZE = 8  # examples in a fixture batch
# One example's shape in a fixture batch, for models that cannot say it by sampling.
FIXTURE_SHAPES: dict[str, tuple[int, ...]] = {"image": (1, 8, 8), "vector": (2,), "audio": (256,), "point_cloud": (32, 3)}
# The rank of one example of each built-in modality; images have 1 or 3 channels, points 3 coordinates.
EXAMPLE_RANKS = {"image": 3, "vector": 1, "audio": 1, "point_cloud": 2}
TRAINING_STEPS, LEARNING_RATE = 10, 1e-3


def _architecture(name: str) -> Architecture:
    found = find_architecture(name, get_registry())
    if isinstance(found, str):
        raise AssertionError(found)
    return found


def _preset_config(found: Architecture, preset: str, vocab_size: int | None) -> ModelConfig:
    config = load_model_config({"architecture": found.name, "preset": preset}, label=f"preset {preset!r}")
    if vocab_size is not None and has_vocabulary(config) and config.params.vocab_size is None:
        config = config.evolve(vocab_size=vocab_size)
    return config


def _build(found: Architecture, preset: str, device: Any, vocab_size: int | None = None) -> tuple[Any, str]:
    """A seeded model of the preset on ``device``, and the modality it was built for."""
    import torch

    from model_foundry.commands._checkpoint import config_modality
    from model_foundry.factory import create_model

    torch.manual_seed(0)
    model = create_model(_preset_config(found, preset, vocab_size), device=device)
    return model, config_modality(model.config, found.schema.capabilities)


def _is_text(found: Architecture, preset: str) -> bool:
    from model_foundry.commands._checkpoint import config_modality

    return config_modality(_preset_config(found, preset, None), found.schema.capabilities) == "text"


# --- batches -----------------------------------------------------------------------------------


def _tokenizer(directory: str) -> Any:
    from model_foundry.factory import train_tokenizer
    from model_foundry.text.config import TokenizerConfig

    path = os.path.join(directory, "sample.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(SAMPLE_TEXT * 4)
    return train_tokenizer(TokenizerConfig(tokenizer_type="char", vocab_size=96, min_frequency=1), [path])


def _collate(examples: Any, model_config: ModelConfig, modality: str, tokenizer: Any, objective: str | None) -> Any:
    """``examples`` through the collator training would use, with every random draw seeded."""
    import torch

    from model_foundry.config import TrainingConfig
    from model_foundry.evaluation import make_collator

    training = TrainingConfig(objective=objective, mlm_probability=0.3)
    return make_collator(training, model_config, None, modality, tokenizer, torch.Generator().manual_seed(0))(examples)


def _text_batch(tokenizer: Any, model_config: ModelConfig, objective: str, device: Any) -> dict[str, Any]:
    from model_foundry.evaluation import to_device

    lines = [line for line in SAMPLE_TEXT.splitlines() if line]
    examples = [{"input_ids": tokenizer(line, add_special_tokens=False)["input_ids"][:24]} for line in lines]
    return to_device(_collate(examples, model_config, "text", tokenizer, objective), device)


def fixture_batch(
    modality: str, example_shape: tuple[int, ...], count: int = FIXTURE_SIZE, num_classes: int | None = None, seed: int = 0,
) -> dict[str, Any]:
    """A tiny seeded batch of ``modality`` data under its batch key (``pixel_values``, ``vectors``, ...).

    Images: Gaussian blobs in [-1, 1]; vectors: two clusters; audio: sine tones in [-1, 1];
    point clouds: noisy spheres; another modality: standard normal noise. ``class_labels``
    (0, 1, ... cycling) are added when ``num_classes`` is given.
    """
    import torch

    from model_foundry.registry import unique_entry

    spec = unique_entry(get_registry().modalities, modality, "modality")
    if isinstance(spec, str):
        raise AssertionError(spec)
    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    if modality == "image":
        channels, height, width = example_shape
        rows, columns = torch.arange(height)[:, None] / height, torch.arange(width)[None, :] / width
        centre, spread = uniform(count, channels, 2) * 0.5 + 0.25, uniform(count, channels, 1, 1) * 0.1 + 0.05
        distance = (rows - centre[..., 0, None, None]) ** 2 + (columns - centre[..., 1, None, None]) ** 2
        data = torch.exp(-distance / (2 * spread**2)) * 2 - 1
    elif modality == "vector":
        side = torch.arange(count) % 2 * 2 - 1.0
        data = side[:, None] + 0.1 * torch.randn(count, *example_shape, generator=generator)
    elif modality == "audio":
        (length,) = example_shape
        frequency = uniform(count, 1) * 0.1 + 0.02  # cycles per sample
        data = 0.5 * torch.sin(2 * math.pi * frequency * torch.arange(length))
    elif modality == "point_cloud":
        directions = torch.randn(count, *example_shape, generator=generator)
        radius = uniform(count, 1, 1) + 0.5
        data = directions / directions.norm(dim=-1, keepdim=True) * radius + 0.01 * torch.randn(directions.shape, generator=generator)
    else:
        data = torch.randn(count, *example_shape, generator=generator)
    batch: dict[str, Any] = {spec.input_key: data.float()}
    if num_classes:
        batch["class_labels"] = torch.arange(count) % num_classes
    return batch


def _example_shape(model: Any, capabilities: Any, modality: str) -> tuple[int, ...] | None:
    """One example's shape: what the model samples, else the modality's fixture shape."""
    import torch

    if capabilities.sampling:
        with torch.no_grad():
            return tuple(model.sample(1, generator=torch.Generator().manual_seed(0)).shape[1:])
    return FIXTURE_SHAPES.get(modality)


def _model_batch(model: Any, found: Architecture, modality: str, device: Any) -> dict[str, Any]:
    """The fixture batch of a non-text model, through its modality's collator, on ``device``."""
    from model_foundry.evaluation import to_device

    shape = _example_shape(model, found.schema.capabilities, modality)
    assert shape is not None, (
        f"{found.name}: the kit has no fixture for {modality} data and the model cannot sample to show its layout"
    )
    examples = fixture_batch(modality, shape, num_classes=model.num_classes)
    return to_device(_collate(examples, model.config, modality, None, None), device)


def _seeded_loss(model: Any, batch: dict[str, Any]) -> Any:
    """The loss with torch's global RNG seeded, so that a stochastic loss (noise, timesteps) compares."""
    import torch

    torch.manual_seed(0)
    return model(**batch).loss


# --- the checks --------------------------------------------------------------------------------


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
    """Forward/backward on a tiny batch gives finite loss and gradients; a language model's logits
    match its input; a model of another modality lowers its loss on the fixture in a few steps."""
    import torch

    from model_foundry.config import objectives_of

    found = _architecture(name)
    if _is_text(found, preset):
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = _tokenizer(tmp)
            model, _ = _build(found, preset, device, vocab_size=len(tokenizer))
            objectives = objectives_of(model.config, get_registry())
            assert objectives, f"{name}/{preset}: declares no training objective"
            batch = _text_batch(tokenizer, model.config, objectives[0], device)
    else:
        model, modality = _build(found, preset, device)
        batch = _model_batch(model, found, modality, device)
    model.train()
    output = model(**batch)
    assert output.loss is not None, f"{name}: forward returned no loss"
    assert output["loss"] is output.loss, f"{name}: output is not readable both as attributes and keys"
    assert output.loss.dim() == 0 and torch.isfinite(output.loss), f"{name}: loss is not a finite scalar ({output.loss})"
    if "input_ids" in batch:
        assert output.logits is not None and output.logits.shape[:2] == batch["input_ids"].shape, (
            f"{name}: logits shape {tuple(output.logits.shape)} does not match input {tuple(batch['input_ids'].shape)}"
        )
    output.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradients"
    if "input_ids" not in batch and model.parameter_groups() is None:
        _check_loss_decreases(name, model, batch)


def _check_loss_decreases(name: str, model: Any, batch: dict[str, Any]) -> None:
    """A few Adam steps on the fixture batch lower the (seeded) loss: the model can learn from its data."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    with torch.no_grad():
        before = float(_seeded_loss(model, batch))
    for _ in range(TRAINING_STEPS):
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(_seeded_loss(model, batch))
    assert after < before, f"{name}: {TRAINING_STEPS} Adam steps on a fixture batch did not lower the loss ({before} -> {after})"


def check_save_load(name: str, preset: str = "tiny", device: Any = None) -> None:
    """save -> load rebuilds the same architecture with identical outputs (and samples), and no pickle in the directory."""
    import torch

    from model_foundry.checkpoint import load, save

    found = _architecture(name)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(tmp) if _is_text(found, preset) else None
        model, modality = _build(found, preset, device, vocab_size=len(tokenizer) if tokenizer is not None else None)
        model.eval()
        if tokenizer is not None:
            ids = tokenizer("Sphinx of black quartz", add_special_tokens=False)["input_ids"]
            batch: dict[str, Any] = {"input_ids": torch.tensor([ids], device=device)}
        else:
            batch = _model_batch(model, found, modality, device)

        def outputs(of: Any) -> list[Any]:
            with torch.no_grad():
                found_outputs = [of(**batch).logits if tokenizer is not None else _seeded_loss(of, batch)]
                if found.schema.capabilities.sampling:
                    found_outputs.append(of.sample(3, generator=torch.Generator().manual_seed(0)))
            return found_outputs

        before = outputs(model)
        directory = os.path.join(tmp, "checkpoint")
        save(model, directory, tokenizer=tokenizer, metrics={"check": 1.0})
        for file in os.listdir(directory):
            assert not file.endswith((".bin", ".pt", ".pkl", ".pth")), f"{name}: pickle-format file {file} in checkpoint"
        loaded = load(directory, device=device)
        assert type(loaded) is type(model), f"{name}: loaded {type(loaded).__name__}, saved {type(model).__name__}"
        assert loaded.architecture == name
        for what, old, new in zip(("outputs", "samples"), before, outputs(loaded), strict=False):
            assert torch.equal(old, new), f"{name}: {what} differ after save -> load"


def check_generation(name: str, preset: str = "tiny", device: Any = None) -> None:
    """``supports_generation`` is honest: generation runs when claimed, and is refused when not;
    only language models claim it."""
    import torch

    from model_foundry.text.modeling import LanguageModel

    found = _architecture(name)
    claimed = found.schema.capabilities.supports_generation
    if not _is_text(found, preset):
        assert not claimed, f"{name}: capabilities claim text generation for a model of another modality"
        return
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(tmp)
        model, _ = _build(found, preset, device, vocab_size=len(tokenizer))
        model.eval()
        assert isinstance(model, LanguageModel), f"{name}: a text model is a model_foundry.text.modeling.LanguageModel"
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
        if claimed:
            assert any(
                _build(found, p, "meta", vocab_size=len(tokenizer))[0].supports_generation for p in found.schema.presets
            ), f"{name}: capabilities claim generation but no preset builds a model that generates"


def check_sampling(name: str, preset: str = "tiny", device: Any = None) -> None:
    """``sample`` (architectures with the sampling capability): float32 samples in the modality's
    layout on the model's device, the same for the same seed, other ones for another seed, and
    from the class asked for when the model is conditional."""
    import torch

    found = _architecture(name)
    capabilities = found.schema.capabilities
    if not capabilities.sampling:
        return
    model, modality = _build(found, preset, device)
    model.eval()

    def draw(count: int, seed: int, conditions: Any = None) -> Any:
        return model.sample(count, generator=torch.Generator().manual_seed(seed), conditions=conditions)

    samples = draw(4, 0)
    assert isinstance(samples, torch.Tensor), f"{name}: sample returned a {type(samples).__name__}, not a tensor"
    assert samples.dtype == torch.float32, f"{name}: samples are {samples.dtype}, not float32"
    assert samples.shape[0] == 4, f"{name}: sample(4) returned {samples.shape[0]} samples (shape {tuple(samples.shape)})"
    rank = EXAMPLE_RANKS.get(modality)
    layout = {"image": "(N, C, H, W), C 1 or 3", "point_cloud": "(N, P, 3)", "vector": "(N, D)", "audio": "(N, T)"}
    assert rank is None or (
        samples.dim() == rank + 1
        and (modality != "image" or samples.shape[1] in (1, 3))
        and (modality != "point_cloud" or samples.shape[-1] == 3)
    ), f"{name}: {modality} samples must be {layout.get(modality)}, got {tuple(samples.shape)}"
    assert samples.device == next(model.parameters()).device, f"{name}: samples on {samples.device}, not the model's device"
    assert torch.isfinite(samples).all(), f"{name}: samples are not finite"
    assert torch.equal(samples, draw(4, 0)), f"{name}: the same seed gave different samples"
    assert not torch.equal(samples, draw(4, 1)), f"{name}: another seed gave the same samples"
    if capabilities.conditional and model.num_classes:
        conditions = torch.arange(4, device=samples.device) % model.num_classes
        conditioned = draw(4, 0, conditions)
        assert conditioned.shape == samples.shape, f"{name}: conditional samples have shape {tuple(conditioned.shape)}"
        assert torch.equal(conditioned, draw(4, 0, conditions)), f"{name}: the same seed and classes gave different samples"


def check_log_prob(name: str, preset: str = "tiny", device: Any = None) -> None:
    """``log_prob`` (architectures with the likelihood capability): one finite value per example;
    exact likelihoods do not depend on the batch an example is in (the batch's total is the sum
    over any split of it); a bound is repeatable under the same torch seed."""
    import torch

    found = _architecture(name)
    kind = found.schema.capabilities.likelihood
    if kind is None:
        return
    model, modality = _build(found, preset, device)
    model.eval()
    batch = _model_batch(model, found, modality, device)

    def log_prob(part: dict[str, Any]) -> Any:
        torch.manual_seed(0)
        with torch.no_grad():
            return model.log_prob(**part)

    whole = log_prob(batch)
    count = len(next(iter(batch.values())))
    assert whole.shape == (count,), f"{name}: log_prob of {count} examples has shape {tuple(whole.shape)}, not ({count},)"
    assert torch.isfinite(whole).all(), f"{name}: log_prob is not finite ({whole.tolist()})"
    if kind == "exact":
        halves = [{key: value[part] for key, value in batch.items()} for part in (slice(0, 3), slice(3, None))]
        split = torch.cat([log_prob(half) for half in halves])
        torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: log_prob depends on the batch: {m}")
    else:
        assert torch.equal(whole, log_prob(batch)), f"{name}: a likelihood bound is not repeatable under the same seed"


def check_latent(name: str, preset: str = "tiny", device: Any = None) -> None:
    """``encode``/``decode`` (architectures with the latent capability): one latent per example,
    and decoding the latents gives data shaped like the batch."""
    import torch

    from model_foundry.registry import unique_entry

    found = _architecture(name)
    if not found.schema.capabilities.latent:
        return
    model, modality = _build(found, preset, device)
    model.eval()
    batch = _model_batch(model, found, modality, device)
    data = batch[unique_entry(get_registry().modalities, modality, "modality").input_key]
    with torch.no_grad():
        latents = model.encode(**batch)
        assert isinstance(latents, torch.Tensor) and latents.shape[0] == len(data), (
            f"{name}: encode must return a tensor with one latent per example"
        )
        decoded = model.decode(latents)
    assert decoded.shape == data.shape, f"{name}: decode(encode(x)) has shape {tuple(decoded.shape)}, x {tuple(data.shape)}"


def check_energy_and_score(name: str, preset: str = "tiny", device: Any = None) -> None:
    """``energy(x)`` is one finite value per example; ``score(x)`` is finite and shaped like ``x``."""
    import torch

    from model_foundry.registry import unique_entry

    found = _architecture(name)
    capabilities = found.schema.capabilities
    if not (capabilities.energy or capabilities.score):
        return
    model, modality = _build(found, preset, device)
    model.eval()
    data = _model_batch(model, found, modality, device)[unique_entry(get_registry().modalities, modality, "modality").input_key]
    if capabilities.energy:
        energy = model.energy(data)
        assert energy.shape == (len(data),) and torch.isfinite(energy).all(), f"{name}: energy(x) must be (N,) finite values"
    if capabilities.score:
        score = model.score(data)
        assert score.shape == data.shape and torch.isfinite(score).all(), f"{name}: score(x) must be finite and shaped like x"


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
    check_sampling,
    check_log_prob,
    check_latent,
    check_energy_and_score,
]


def conformance_checks() -> list[Callable[..., None]]:
    """The checks, in order; each takes the architecture name (a capability's check passes at once
    for an architecture without that capability)."""
    return list(CHECKS)


def check_architecture(name: str, preset: str = "tiny", device: Any = None) -> None:
    """Run every conformance check on an installed architecture (``preset`` is the small one to
    train; the checks that run a model run it on ``device``)."""
    import inspect

    for check in CHECKS:
        parameters = inspect.signature(check).parameters
        options = {"preset": preset, "device": device}
        check(name, **{key: value for key, value in options.items() if key in parameters})
