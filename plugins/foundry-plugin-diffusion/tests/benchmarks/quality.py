"""Quality runs of the diffusion plugin, for ``tests/benchmarks/generative_quality.py``.

- ``ddpm``: configs/ddpm.yaml on the digits; score and Fréchet distance of 1000 samples (EMA
  weights, 50 DDIM steps, as configured) by ``foundry eval``.
- ``ddpm-samplers``: the trained ``ddpm`` checkpoint sampled by 1000 DDPM steps and by 50 DDIM
  steps, the same number of samples each: scores and CPU seconds per sample.
- ``diffusion-guided``: configs/diffusion.yaml (class-conditional, guidance 3); the share of
  samples the digits classifier assigns the requested class, with and without guidance.
- ``diffusers-overhead``: a training step and DDPM/DDIM sampling of the same UNet through this
  plugin and through diffusers' own training step and DDPMPipeline/DDIMPipeline (the median
  ratio of 5 rounds, each timing ours and diffusers' back to back; CPU time, one thread); the memory of a training step of the ``base`` preset.
- ``score_diffusion``: configs/score_diffusion.yaml, annealed Langevin samples.

Every time is process CPU time on one thread (the machine is shared).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

FAMILY = "Diffusion"
ROOT = Path(__file__).resolve().parents[4]
ROUNDS = 5  # interleaved timing rounds in diffusers-overhead
SAMPLES = 100  # per sampler in ddpm-samplers (1000 DDPM steps cost ~1.3 CPU s per sample)


def _validation_images(data: Any) -> torch.Tensor:
    return data.validation.batch(range(len(data.validation)))["pixel_values"].float()


def _quality(samples: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    from model_foundry.metrics import class_probability_score, digits_features, frechet_distance

    features, probabilities = digits_features(samples)
    real_features, _ = digits_features(real)
    return class_probability_score(probabilities), frechet_distance(features, real_features)


def _timed(function: Any, *args: Any, **options: Any) -> tuple[Any, float]:
    start = time.process_time()
    result = function(*args, **options)
    return result, time.process_time() - start


def _draw(model: Any, conditions: torch.Tensor | None = None, count: int = SAMPLES, **options: Any) -> torch.Tensor:
    """``count`` samples in batches of 100 from one generator seeded 0 (one class each with ``conditions``)."""
    generator = torch.Generator().manual_seed(0)
    parts = conditions.split(100) if conditions is not None else [None] * (count // 100)
    return torch.cat([model.sample(100 if part is None else len(part), generator=generator, conditions=part, **options)
                      for part in parts])


def measure_ddpm(bench: Any) -> dict[str, Any]:
    return ddpm_row(bench, bench.train("configs/ddpm.yaml", "training.eval_every=0"))


def ddpm_row(bench: Any, run: Any) -> dict[str, Any]:
    metrics = bench.evaluate(run)
    return {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes, "score": metrics["digits_score"],
        "Fréchet": metrics["digits_fid"], "sampler": "DDIM 50 (EMA), 1000 samples",
        "samples": bench.sample_picture(run, "ddpm"),
    }


def measure_ddpm_samplers(bench: Any) -> dict[str, Any]:
    from model_foundry.commands.sample import sampling_weights_of

    torch.set_num_threads(1)
    opened, data = bench.load(ROOT / "runs" / "quality" / "ddpm" / "final")
    real, model = _validation_images(data), opened.model
    row: dict[str, Any] = {"parameters": model.num_parameters(), "samples drawn": SAMPLES}
    results = {}
    with sampling_weights_of(opened, None):
        for sampler, steps in (("ddpm", 1000), ("ddim", 50)):
            samples, seconds = _timed(_draw, model, sampler=sampler, steps=steps)
            score, fid = _quality(samples, real)
            results[sampler] = (score, fid, seconds / SAMPLES)
    (ddpm_score, ddpm_fid, ddpm_time), (ddim_score, ddim_fid, ddim_time) = results["ddpm"], results["ddim"]
    row.update({
        "score DDPM 1000": ddpm_score, "Fréchet DDPM 1000": ddpm_fid, "CPU s/sample DDPM 1000": ddpm_time,
        "score DDIM 50": ddim_score, "Fréchet DDIM 50": ddim_fid, "CPU s/sample DDIM 50": ddim_time,
        "DDIM/DDPM score": ddim_score / ddpm_score, "DDIM speed-up": ddpm_time / ddim_time,
    })
    return row


def measure_guided(bench: Any) -> dict[str, Any]:
    from model_foundry.commands.sample import sampling_weights_of
    from model_foundry.metrics import digits_features

    torch.set_num_threads(1)
    run = bench.train("configs/diffusion.yaml", "training.eval_every=0")
    metrics = bench.evaluate(run)
    opened, _ = bench.load(run.checkpoint)
    model = opened.model
    requested = torch.arange(10).repeat_interleave(50)
    agreement = {}
    with sampling_weights_of(opened, None):
        for scale in (1.0, model.guidance_scale):
            samples, seconds = _timed(_draw, model, requested, guidance_scale=scale)
            _, probabilities = digits_features(samples)
            agreement[scale] = (float((probabilities.argmax(-1) == requested).float().mean()), seconds / len(requested))
    unguided, guided = agreement[1.0], agreement[model.guidance_scale]
    return {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes, "score": metrics["digits_score"],
        "Fréchet": metrics["digits_fid"], "sampler": f"DDIM 50, guidance {model.guidance_scale:g} (EMA)",
        "class agreement guided": guided[0], "class agreement unguided": unguided[0],
        "CPU s/sample guided": guided[1],
        "samples": " ".join(bench.sample_picture(run, f"diffusion-class-{digit}", num_samples=16, condition=digit)
                            for digit in (0, 3, 7)),
    }


def _interleaved_ratio(ours: Any, reference: Any, rounds: int) -> tuple[float, float]:
    """Median over ``rounds`` of ours' CPU time / the reference's, the two timed back to back in each
    round (so a busy spell of the shared machine falls on both); and ours' median time."""
    ours(), reference()  # warm-up
    ratios, times = [], []
    for _ in range(rounds):
        mine, theirs = _timed(ours)[1], _timed(reference)[1]
        ratios.append(mine / theirs)
        times.append(mine)
    return statistics.median(ratios), statistics.median(times)


def measure_overhead(bench: Any) -> dict[str, Any]:
    import torch.nn.functional as F
    from diffusers import DDIMPipeline, DDPMPipeline, DDPMScheduler
    from foundry_plugin_diffusion.export import scheduler_config

    import model_foundry

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = model_foundry.create_model("ddpm", preset="small")
    unet, scheduler = model.network.unet, DDPMScheduler(**scheduler_config(model))
    images = torch.rand(128, 1, 8, 8) * 2 - 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def ours_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(pixel_values=images).loss.backward()
        optimizer.step()

    def diffusers_step() -> None:  # the training step of diffusers' train_unconditional.py example
        optimizer.zero_grad(set_to_none=True)
        noise = torch.randn_like(images)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (images.shape[0],)).long()
        prediction = unet(scheduler.add_noise(images, noise, timesteps), timesteps).sample
        F.mse_loss(prediction.float(), noise.float()).backward()
        optimizer.step()

    count, steps = 64, 50
    ddpm = DDPMPipeline(unet=unet, scheduler=scheduler)
    ddim = DDIMPipeline(unet=unet, scheduler=scheduler)
    ddpm.set_progress_bar_config(disable=True)
    ddim.set_progress_bar_config(disable=True)

    def ours_sampler(sampler: str) -> Any:
        return lambda: model.sample(count, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps)

    def pipeline(which: Any) -> Any:
        return lambda: which(batch_size=count, generator=torch.Generator().manual_seed(0),
                             num_inference_steps=steps, output_type="np")

    model.train()
    train_ratio, train_time = _interleaved_ratio(ours_step, diffusers_step, ROUNDS)
    model.eval()
    ddpm_ratio, _ = _interleaved_ratio(ours_sampler("ddpm"), pipeline(ddpm), ROUNDS)
    ddim_ratio, _ = _interleaved_ratio(ours_sampler("ddim"), pipeline(ddim), ROUNDS)
    return {
        "parameters": model.num_parameters(),
        "train step ms (batch 128)": 1000 * train_time,
        "train step vs diffusers": train_ratio,
        f"DDPM {steps} steps vs DDPMPipeline": ddpm_ratio,
        f"DDIM {steps} steps vs DDIMPipeline": ddim_ratio,
        "timing rounds (median ratio)": ROUNDS,
        "base preset training-step memory MB (batch 128)": training_step_memory("base", 128) / 2**20,
    }


def training_step_memory(preset: str, batch_size: int) -> int:
    """Bytes of an AdamW training step: weights, gradients, two moments, and the activations autograd
    keeps for the backward pass (every tensor saved for backward, counted once per storage)."""
    import model_foundry

    model = model_foundry.create_model("ddpm", preset=preset)
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(pixel_values=torch.rand(batch_size, 1, 8, 8) * 2 - 1).loss
    loss.backward()
    activations = sum(size for pointer, size in storages.items() if pointer not in parameters)
    return model.memory_footprint()["training_adamw"] + activations


def measure_score(bench: Any) -> dict[str, Any]:
    run = bench.train("configs/score_diffusion.yaml", "training.eval_every=0")
    metrics = bench.evaluate(run)
    return {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes, "score": metrics["digits_score"],
        "Fréchet": metrics["digits_fid"], "sampler": "annealed Langevin 10 x 20 (EMA)",
        "samples": bench.sample_picture(run, "score_diffusion"),
    }


RUNS = {
    "ddpm": measure_ddpm,
    "ddpm-samplers": measure_ddpm_samplers,
    "diffusion-guided": measure_guided,
    "diffusers-overhead": measure_overhead,
    "score_diffusion": measure_score,
}
