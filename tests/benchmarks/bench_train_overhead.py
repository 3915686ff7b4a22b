"""Per-step overhead of ``foundry train``'s loop against a raw PyTorch loop, three cases:

* ``gpt2`` — the quickstart's GPT-2 (configs/quickstart.yaml) on Shakespeare blocks; goal <= 3 %;
* ``mlp`` — a tiny MLP autoencoder on the ``digits`` images (64 -> 128 -> 16 -> 128 -> 64,
  batch 64), where per-step Python costs weigh most; goal <= 5 %;
* ``two-optimizer`` — the same sizes as a generator and a critic, one AdamW each, driven by a
  custom training step (critic then generator every step); goal <= 5 %.

Both loops train the same module on the same examples in the same order, through the same
collator, with the same AdamW groups, schedule and gradient clipping; the raw loop is the
textbook ``forward; backward; clip; step; zero_grad`` (per optimizer). The foundry loop runs
in-process through :func:`model_foundry.training.train` (Accelerate, metrics, progress lines,
interrupt handling included; evaluation and intermediate checkpoints off). One thread.

Timing. The two loops run in one process, step by step in turns: ``foundry train`` runs, and
after each of its steps the plain loop (a generator) takes one step. Each step is timed: the plain
loop's from fetching its batch to its scheduler's step; ``foundry train``'s from the end of the
plain loop's previous step to the end of its own (its logging, checks and step). A loop's time per
step is the mean over the steps after the first ``--warmup`` of each run, pooled over ``--runs``
runs; the overhead is the ratio of the two. Taking turns step by step matters on this shared
machine: it runs the same loop, on the same batches, in phases seconds long whose speeds differ by
up to 1.6x (other tenants), so loops timed one after the other, even alternating, mostly compare
the phases they met; turns of one step meet the same phases. (Turns between two threads would
not do: the same plain loop ran 1-3 % slower in the main thread than in a second one; with
MALLOC_ARENA_MAX=1 the gap shrank to about 1 %, so the threads' memory arenas are the likely cause.)

    python tests/benchmarks/bench_train_overhead.py [--case all|gpt2|mlp|two-optimizer] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Iterator
from unittest import mock

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import attrs  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from model_foundry.config import load_config  # noqa: E402
from model_foundry.datasets import DataContext, load_data  # noqa: E402
from model_foundry.evaluation import make_collator  # noqa: E402
from model_foundry.examples.shakespeare import prepare  # noqa: E402
from model_foundry.factory import create_model  # noqa: E402
from model_foundry.fields import option  # noqa: E402
from model_foundry.plugin import hookimpl  # noqa: E402
from model_foundry.protocol import FoundryModel, ModelOutput  # noqa: E402
from model_foundry.records import ArchitectureSchema, Capabilities, ModelBuilder, TrainingStep  # noqa: E402
from model_foundry.testing import isolated_registry  # noqa: E402
from model_foundry.text.data import obtain_tokenizer  # noqa: E402
from model_foundry.training import train  # noqa: E402
from model_foundry.training.loop import BlockOrder, _Run, adamw_groups, collate, lr_scheduler  # noqa: E402

GOALS = {"gpt2": 0.03, "mlp": 0.05, "two-optimizer": 0.05}
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "quickstart.yaml")


# --- the two small image models, registered directly -------------------------------------------


@attrs.frozen
class MLPConfig:
    hidden: int = option(128, doc="hidden width")
    latent: int = option(16, doc="latent width")


class MLPAutoencoder(FoundryModel):
    def __init__(self, config):
        super().__init__(config)
        self.encoder = nn.Sequential(nn.Linear(64, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.latent))
        self.decoder = nn.Sequential(nn.Linear(config.latent, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 64))

    def forward(self, pixel_values, **_):
        flat = pixel_values.flatten(1)
        return ModelOutput(loss=((self.decoder(self.encoder(flat)) - flat) ** 2).mean())


class MLPGan(FoundryModel):
    def __init__(self, config):
        super().__init__(config)
        self.generator = nn.Sequential(nn.Linear(config.latent, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 64))
        self.critic = nn.Sequential(nn.Linear(64, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1))

    def parameter_groups(self):
        return {"generator": self.generator.parameters(), "critic": self.critic.parameters()}

    def forward(self, pixel_values, part="critic", **_):
        fake = self.generator(torch.randn(len(pixel_values), self.config.latent))
        if part == "generator":
            return ModelOutput(loss=nn.functional.softplus(-self.critic(fake)).mean())
        real = nn.functional.softplus(-self.critic(pixel_values.flatten(1))).mean()
        return ModelOutput(loss=real + nn.functional.softplus(self.critic(fake.detach())).mean())


def gan_step(model, batches, context):
    """Critic, then generator, once per step (n_critic = 1, one micro-batch)."""
    (batch,) = batches
    critic_loss = model(**batch, part="critic").loss
    context.backward(critic_loss)
    context.step_optimizer("critic")
    generator_loss = model(**batch, part="generator").loss
    context.backward(generator_loss)
    context.step_optimizer("generator")
    return {"loss": critic_loss.detach(), "generator_loss": generator_loss.detach()}


class BenchPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        image = Capabilities(modality="image")
        return [ArchitectureSchema("bench-mlp", MLPConfig, capabilities=image),
                ArchitectureSchema("bench-gan", MLPConfig, capabilities=image)]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("bench-mlp", MLPAutoencoder), ModelBuilder("bench-gan", MLPGan)]

    @hookimpl
    def foundry_training_steps(self):
        return [TrainingStep("bench-gan", gan_step)]


# --- the two loops ------------------------------------------------------------------------------


def plain_loop(config, tokenizer, dataset, steps: int,
               step: Callable[[Any, dict[str, torch.Tensor], dict[str, Any]], None]) -> Iterator[float]:
    """A plain PyTorch loop over the same examples, collator, optimizers and schedule as foundry's,
    yielding the seconds of each step."""
    training = config.training
    torch.manual_seed(training.seed)
    model = create_model(config.model.evolve(vocab_size=len(tokenizer)) if tokenizer else config.model)
    model.train()
    groups = model.parameter_groups() or {"model": model.parameters()}
    optimizers = {
        name: torch.optim.AdamW(adamw_groups(params, training.weight_decay), lr=training.learning_rate,
                                betas=(training.adam_beta1, training.adam_beta2))
        for name, params in groups.items()
    }
    schedulers = [lr_scheduler(o, training) for o in optimizers.values()]
    order = BlockOrder(len(dataset), training.batch_size, training.seed, 0, 1)
    collator = make_collator(training, config.model, config.data.params, "text" if tokenizer else "image", tokenizer,
                             torch.Generator())
    device = torch.device("cpu")
    for number in range(steps):
        started = time.perf_counter()
        step(model, collate(collator, dataset, order.indices(number), device), optimizers)
        for scheduler in schedulers:
            scheduler.step()
        yield time.perf_counter() - started


def plain_step(model, batch, optimizers, max_grad_norm=1.0):
    (optimizer,) = optimizers.values()
    model(**batch).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def plain_gan_step(model, batch, optimizers, max_grad_norm=1.0):
    for part in ("critic", "generator"):
        optimizer = optimizers[part]
        model(**batch, part=part).loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def interleaved_run(config, tokenizer, dataset, steps: int, warmup: int, step) -> tuple[list[float], list[float]]:
    """The seconds of each step after the first ``warmup`` of the plain loop and of ``foundry train``
    (in-process, on ``config``), run in turns of one step (see the module's docstring)."""
    plain = plain_loop(config, tokenizer, dataset, steps, step)
    plain_times: list[float] = []
    foundry_times: list[float] = []
    resumed = None
    optimizer_step = _Run.optimizer_step

    def in_turns(run) -> None:
        nonlocal resumed
        optimizer_step(run)
        ended = time.perf_counter()
        if resumed is not None:
            foundry_times.append(ended - resumed)
        plain_times.append(next(plain))
        resumed = time.perf_counter()

    output_dir = tempfile.mkdtemp(prefix="run-", dir=os.path.dirname(config.training.output_dir))
    config = attrs.evolve(config, training=attrs.evolve(config.training, output_dir=output_dir))
    with mock.patch.object(_Run, "optimizer_step", in_turns):
        train(config)
    # foundry's step n (from 1) is foundry_times[n - 2]: its first has no previous step to start from.
    return plain_times[warmup:], foundry_times[warmup - 1:]


def interleaved_runs(config, tokenizer, dataset, steps: int, warmup: int, step, runs: int) -> tuple[list[float], list[float]]:
    """:func:`interleaved_run` ``runs`` times, the step times pooled; the per-run ratios are printed."""
    plain, ours = [], []
    for number in range(runs):
        run_plain, run_ours = interleaved_run(config, tokenizer, dataset, steps, warmup, step)
        print(f"  run {number + 1}: plain {mean_ms(run_plain)}, foundry train {mean_ms(run_ours)}, "
              f"ratio {overhead_ratio(run_ours, run_plain):.3f}", flush=True)
        plain += run_plain
        ours += run_ours
    return plain, ours


def overhead_ratio(ours: list[float], plain: list[float]) -> float:
    """``foundry train``'s mean time per step over the plain loop's."""
    return statistics.fmean(ours) / statistics.fmean(plain)


def mean_ms(times: list[float]) -> str:
    return f"{statistics.fmean(times) * 1e3:.3f} ms/step"


def overhead_table(rows: list[tuple[str, list[float], list[float]]]) -> str:
    """A markdown table of ``(name, plain step times, foundry train step times)`` rows."""
    lines = ["| architecture | plain PyTorch loop | `foundry train` | ratio |", "|---|---|---|---|"]
    lines += [f"| {name} | {mean_ms(plain)} | {mean_ms(ours)} | {overhead_ratio(ours, plain):.3f} |" for name, plain, ours in rows]
    return "\n".join(lines)


def measure(name: str, config, tokenizer, dataset, step, args) -> float:
    plain, ours = interleaved_runs(config, tokenizer, dataset, args.steps[name], args.warmup, step, args.runs)
    overhead = overhead_ratio(ours, plain) - 1
    print(f"[{name}] raw PyTorch loop: {mean_ms(plain)}")
    print(f"[{name}] foundry train:    {mean_ms(ours)}")
    print(f"[{name}] overhead: {overhead * 100:+.1f}% (goal <= {GOALS[name] * 100:.0f}%)", flush=True)
    return overhead


def timing_overrides(scratch: str, steps: int, warmup: int) -> list[str]:
    """A timing run's settings: ``steps`` steps, the first ``warmup`` untimed (and warming up the learning
    rate), a log line every ``warmup`` steps, no evaluation, no checkpoint."""
    return [
        f"training.output_dir={scratch}/run", f"training.max_steps={steps}", f"training.warmup_steps={warmup}",
        f"training.log_every={warmup}", "training.eval_every=0", "training.save_every=0",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["all", *GOALS], default="all")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    args.steps = {"gpt2": 60, "mlp": 1000, "two-optimizer": 1000}
    torch.set_num_threads(1)
    scratch = tempfile.mkdtemp(prefix="bench-train-")
    met = True
    try:
        if args.case in ("all", "gpt2"):
            train_path, valid_path = prepare(os.path.join(scratch, "shakespeare"))
            config = load_config(CONFIG, [
                f"data.train_files=[{train_path}]", f"data.validation_files=[{valid_path}]", f"data.cache_dir={scratch}/cache",
                *timing_overrides(scratch, args.steps["gpt2"], args.warmup),
            ])
            tokenizer = obtain_tokenizer(config.tokenizer, config.data.params, f"{scratch}/cache")
            blocks = load_data(config.data, DataContext(f"{scratch}/cache", tokenizer=tokenizer)).train
            print(f"gpt2: batch {config.training.batch_size} x {config.data.block_size} tokens, {args.steps['gpt2']} steps "
                  f"({args.warmup} untimed), {torch.get_num_threads()} thread(s)")
            met &= measure("gpt2", config, tokenizer, blocks, plain_step, args) <= GOALS["gpt2"]
        with isolated_registry(BenchPlugin()):
            for name, architecture, step in (("mlp", "bench-mlp", plain_step), ("two-optimizer", "bench-gan", plain_gan_step)):
                if args.case not in ("all", name):
                    continue
                path = os.path.join(scratch, f"{name}.yaml")
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(f"model: {{architecture: {architecture}}}\ndata: {{kind: digits}}\n"
                                 "training: {batch_size: 64, learning_rate: 0.001}\n")
                config = load_config(path, timing_overrides(scratch, args.steps[name], args.warmup))
                images = load_data(config.data, DataContext(f"{scratch}/cache")).train
                print(f"{name}: {architecture} on digits, batch 64, {args.steps[name]} steps ({args.warmup} untimed)")
                met &= measure(name, config, None, images, step, args) <= GOALS[name]
        return 0 if met else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
