"""Training and evaluation beyond text: toy vector models on the built-in ``toy`` data, several
optimizers driven by a custom step, gradient accumulation, metrics and samples."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Optional

import attrs
import numpy as np
import pytest

from model_foundry import cli
from model_foundry.config import load_config
from model_foundry.errors import ConfigError
from model_foundry.fields import non_negative, option, positive
from model_foundry.plugin import hookimpl
from model_foundry.records import ArchitectureSchema, Capabilities, CollatorSpec, MetricSpec, ModelBuilder, TrainingStep
from model_foundry.testing import isolated_registry

N_CRITIC = 2


@attrs.frozen
class ToyConfig:
    """Small models of 2-D points."""

    hidden: int = option(8, doc="hidden width", validator=positive)
    latent: int = option(2, doc="latent width", validator=positive)
    eval_sleep: float = option(0.0, doc="seconds each evaluation forward pass sleeps (tests)", validator=non_negative)
    ctrl_c_at_step: Optional[int] = option(None, doc="send this process SIGINT after this optimizer step (tests)")


def build_autoencoder(model_config):
    """An autoencoder whose decoder, fed Gaussian noise, samples; it records what training did to it."""
    import torch
    from torch import nn

    from model_foundry.protocol import FoundryModel, ModelOutput

    class ToyAutoencoder(FoundryModel):
        def __init__(self, config):
            super().__init__(config)
            self.encoder = nn.Sequential(nn.Linear(2, config.hidden), nn.Tanh(), nn.Linear(config.hidden, config.latent))
            self.decoder = nn.Sequential(nn.Linear(config.latent, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 2))
            self.initial_state = {key: value.clone() for key, value in self.state_dict().items()}
            self.training_batches: list[torch.Tensor] = []
            self.accumulated_grads: dict[str, torch.Tensor] = {}
            for name, parameter in self.named_parameters():
                parameter.register_post_accumulate_grad_hook(
                    lambda p, name=name: self.accumulated_grads.__setitem__(name, p.grad.clone())
                )

        def forward(self, vectors, **_):
            if self.training:
                self.training_batches.append(vectors.clone())
            else:
                time.sleep(self.config.eval_sleep)
            reconstruction = self.decoder(self.encoder(vectors))
            return ModelOutput(loss=((reconstruction - vectors) ** 2).sum(-1).mean())

        def sample(self, num_samples, *, generator=None, conditions=None):
            return self.decoder(torch.randn(num_samples, self.config.latent, generator=generator))

    return ToyAutoencoder(model_config)


def build_gan(model_config):
    """A generator and a critic, one parameter group each."""
    import torch
    from torch import nn

    from model_foundry.protocol import FoundryModel, ModelOutput

    class ToyGAN(FoundryModel):
        def __init__(self, config):
            super().__init__(config)
            self.generator = nn.Sequential(nn.Linear(config.latent, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 2))
            self.critic = nn.Sequential(nn.Linear(2, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1))
            self.generator_losses: list[float] = []  # each generator update's loss, as the step returned it

        def parameter_groups(self):
            return {"generator": self.generator.parameters(), "critic": self.critic.parameters()}

        def forward(self, vectors, part="critic", **_):
            fake = self.generator(torch.randn(len(vectors), self.config.latent))  # the global RNG: restored on resume
            if part == "generator":
                return ModelOutput(loss=nn.functional.softplus(-self.critic(fake)).mean())
            real_loss = nn.functional.softplus(-self.critic(vectors)).mean()
            fake_loss = nn.functional.softplus(self.critic(fake.detach())).mean()
            return ModelOutput(loss=real_loss + fake_loss)

        def on_optimizer_step(self, step):
            if step == self.config.ctrl_c_at_step:
                os.kill(os.getpid(), signal.SIGINT)

        def sample(self, num_samples, *, generator=None, conditions=None):
            return self.generator(torch.randn(num_samples, self.config.latent, generator=generator))

    return ToyGAN(model_config)


def gan_step(model, batches, context):
    """The critic learns on every micro-batch; the generator on every N_CRITIC-th step, from all of them."""
    import contextlib

    critic_losses = []
    for batch in batches:
        loss = model(**batch, part="critic").loss
        context.backward(loss)
        context.step_optimizer("critic")
        critic_losses.append(loss.detach())
    result = {"loss": sum(critic_losses) / len(critic_losses)}
    if context.step % N_CRITIC == 0:
        generator_loss = 0.0
        for index, batch in enumerate(batches):
            with contextlib.nullcontext() if index == len(batches) - 1 else context.no_sync():
                loss = model(**batch, part="generator").loss / len(batches)
                context.backward(loss)
            generator_loss += loss.detach()
        context.step_optimizer("generator")
        context.accelerator.unwrap_model(model).generator_losses.append(float(generator_loss))
        result["generator_loss"] = generator_loss
    return result


def scaled_collator(tokenizer, scale=1.0, data_config=None, generator=None):
    """Multiplies the points by ``scale`` (a collator option) and records what it was given."""
    def collate(batch):
        return {**batch, "vectors": batch["vectors"] * scale}

    collate.received = {"tokenizer": tokenizer, "data_config": data_config, "generator": generator}
    return collate


def mean_of_samples(model, dataset, context):
    import torch

    with torch.no_grad():
        samples = model.sample(context.num_samples, generator=torch.Generator().manual_seed(context.seed))
    return {"sample_mean": float(samples.mean()), "seen_eval_loss": context.eval_loss}


def must_not_run(model, dataset, context):
    raise AssertionError("a metric ran for data or capabilities it does not apply to")


class ToyPlugin:
    @hookimpl
    def foundry_config_schemas(self):
        vector = dict(modality="vector", sampling=True)
        return [
            ArchitectureSchema("toy-ae", ToyConfig, capabilities=Capabilities(**vector)),
            ArchitectureSchema("toy-scaled", ToyConfig, capabilities=Capabilities(objectives=("scaled",), **vector)),
            ArchitectureSchema("toy-gan", ToyConfig, capabilities=Capabilities(**vector)),
        ]

    @hookimpl
    def foundry_model_builders(self):
        return [ModelBuilder("toy-ae", build_autoencoder), ModelBuilder("toy-scaled", build_autoencoder),
                ModelBuilder("toy-gan", build_gan)]

    @hookimpl
    def foundry_training_steps(self):
        return [TrainingStep("toy-gan", gan_step)]

    @hookimpl
    def foundry_collators(self):
        return [CollatorSpec("scaled", scaled_collator)]

    @hookimpl
    def foundry_metrics(self):
        return [
            MetricSpec("sample_mean", mean_of_samples, modalities=("vector",), requires=("sampling",)),
            MetricSpec("image_only", must_not_run, modalities=("image",)),
            MetricSpec("needs_likelihood", must_not_run, requires=("likelihood",)),
        ]


@pytest.fixture(autouse=True)
def toy_registry():
    with isolated_registry(ToyPlugin()) as registry:
        yield registry


def write_config(tmp_path, architecture="toy-ae", model=None, data=None, training=None):
    config = {
        "model": {"architecture": architecture, **(model or {})},
        "data": {"kind": "toy", "name": "moons", "num_samples": 400, "validation_fraction": 0.2, **(data or {})},
        "training": {
            "max_steps": 30, "batch_size": 16, "learning_rate": 0.01, "warmup_steps": 2, "log_every": 5,
            "eval_every": 15, "save_every": 15, "eval_samples": 32, "output_dir": str(tmp_path / "run"), **(training or {}),
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return str(path)


def records(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# --- the non-text path -----------------------------------------------------------------------


def test_a_vector_model_trains_evaluates_and_writes_samples(tmp_path, capsys):
    import torch

    from model_foundry import load

    assert cli.main(["train", write_config(tmp_path)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    logged = records(run)
    trained = [r for r in logged if "loss" in r]
    evals = [r for r in logged if "eval_loss" in r]
    assert trained[-1]["loss"] < trained[0]["loss"]
    assert all(r["samples_per_sec"] > 0 and "tokens_per_sec" not in r for r in trained)
    assert "samples/s" in out and "tok/s" not in out
    assert [r["step"] for r in evals] == [15, 30]
    assert all(set(r) == {"step", "eval_loss", "sample_mean", "seen_eval_loss", "elapsed"} for r in evals)
    assert all(r["seen_eval_loss"] == r["eval_loss"] for r in evals)  # metrics see the validation loss
    assert sorted(os.listdir(run / "samples")) == ["step-15", "step-30"]
    assert sorted(os.listdir(run / "samples" / "step-30")) == ["samples.npy", "samples.png"]
    written = np.load(run / "samples" / "step-30" / "samples.npy")
    assert written.shape == (32, 2)
    # Seeded with training.seed: the final weights draw the same samples again.
    final = load(str(run / "final"))
    with torch.no_grad():
        again = final.sample(32, generator=torch.Generator().manual_seed(42))
    assert np.allclose(written, again.numpy(), atol=1e-6)
    assert not (run / "final" / "tokenizer.json").exists()
    assert not np.array_equal(np.load(run / "samples" / "step-15" / "samples.npy"), written)  # it trained in between


def test_validation_loss_is_the_mean_over_examples_without_labels(tmp_path):
    """Uneven batches: the mean over examples, not the mean of batch means."""
    import torch

    from model_foundry.datasets.arrays import ArrayDataset
    from model_foundry.evaluation import as_is, validation_loss
    from model_foundry.protocol import ModelOutput

    class FirstCoordinate(torch.nn.Module):
        def forward(self, vectors):
            return ModelOutput(loss=vectors[:, 0].mean())

    values = np.arange(10, dtype=np.float32)
    dataset = ArrayDataset({"vectors": np.stack([values, values], axis=1)})
    total, weight = validation_loss(FirstCoordinate(), dataset, as_is, batch_size=4, device="cpu")
    assert weight == 10 and total / weight == pytest.approx(values.mean())
    # Two processes share the batches; their sums add up to the same mean.
    shares = [validation_loss(FirstCoordinate(), dataset, as_is, batch_size=4, device="cpu", rank=r, world=2) for r in (0, 1)]
    assert sum(s[0] for s in shares) / sum(s[1] for s in shares) == pytest.approx(values.mean())


def test_metrics_apply_by_modality_and_capability(toy_registry):
    from model_foundry.evaluation import applicable_metrics

    def names(modality, capabilities):
        return [m.name for m in applicable_metrics(modality, capabilities, toy_registry)
                if m.name in ("sample_mean", "image_only", "needs_likelihood", "perplexity")]

    assert names("vector", Capabilities(modality="vector", sampling=True)) == ["sample_mean"]
    assert names("vector", Capabilities(modality="vector")) == []
    assert names("text", Capabilities()) == ["perplexity"]
    assert names("image", Capabilities(modality="image", sampling=True, likelihood="exact")) == ["image_only", "needs_likelihood"]


def test_collators_get_the_options_their_factory_names(tmp_path, toy_registry):
    """No objective in the config: the architecture's first; collator_options reach the factory."""
    from model_foundry.evaluation import make_collator

    config = load_config(write_config(tmp_path, "toy-scaled", training={"collator_options": {"scale": 3.0}}))
    assert config.training.objective is None
    import torch

    generator = torch.Generator()
    collate = make_collator(config.training, config.model, config.data.params, "vector", None, generator, toy_registry)
    assert collate.received == {"tokenizer": None, "data_config": config.data.params, "generator": generator}
    batch = collate({"vectors": torch.ones(2, 2)})
    assert (batch["vectors"] == 3).all()

    from model_foundry.training import train

    bad = write_config(tmp_path, "toy-scaled", training={"collator_options": {"scael": 3.0}})
    with pytest.raises(ConfigError) as caught:
        train(load_config(bad))
    message = str(caught.value)
    assert f"{bad}:" in message and "training.collator_options.scael: the collator of objective 'scaled' takes no option 'scael'" in message
    assert "it takes: tokenizer, scale, data_config, generator" in message


# --- optimisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("weight_penalty", [0.0, 0.5])
def test_gradient_accumulation_applies_the_gradient_of_the_mean_loss(tmp_path, weight_penalty):
    """The gradient stepped on is that of the mean of the micro-batch losses (plus an extension's
    weight penalty), and that mean is logged."""
    import torch

    from model_foundry.training import train

    path = write_config(tmp_path, training={
        "max_steps": 1, "warmup_steps": 0, "gradient_accumulation_steps": 3, "batch_size": 4, "log_every": 1, "eval_every": 0,
        "max_grad_norm": None,
    })
    if weight_penalty:
        config = json.loads(open(path).read())
        open(path, "w").write(json.dumps({**config, "extensions": {"regularization": {"weight_penalty": weight_penalty}}}))
    config = load_config(path)
    result = train(config)
    model = result.model
    assert len(model.training_batches) == 3
    reference = build_autoencoder(config.model)
    reference.load_state_dict(model.initial_state)
    losses = [reference(vectors=batch).loss for batch in model.training_batches]
    penalty = weight_penalty * sum(p.pow(2).sum() for p in reference.parameters())
    (sum(losses) / len(losses) + penalty).backward()
    for name, parameter in reference.named_parameters():
        assert torch.allclose(model.accumulated_grads[name], parameter.grad, rtol=1e-5, atol=1e-7), name
    assert records(tmp_path / "run")[0]["loss"] == pytest.approx(float(sum(losses).detach() / 3), rel=1e-6)


def test_a_custom_step_drives_one_optimizer_per_parameter_group(tmp_path):
    from model_foundry.training import train
    from model_foundry.training.state import read_training_state

    config = load_config(write_config(tmp_path, "toy-gan", training={
        "max_steps": 6, "gradient_accumulation_steps": 2, "eval_every": 0, "log_every": 3, "save_every": 0,
        "optimizers": {"generator": {"learning_rate": 0.001, "adam_beta1": 0.5}},
    }))
    train(config)
    _, optimizers, _ = read_training_state(str(tmp_path / "run" / "checkpoint-6"))
    steps = {name: {float(entry["step"]) for entry in state["state"].values()} for name, state in optimizers.items()}
    assert steps == {"critic": {12.0}, "generator": {3.0}}  # every micro-batch; every N_CRITIC-th step
    assert [group["betas"][0] for group in optimizers["generator"]["param_groups"]] == [0.5, 0.5]
    assert [group["betas"][0] for group in optimizers["critic"]["param_groups"]] == [0.9, 0.9]
    logged = records(tmp_path / "run")
    assert all(r["lr_generator"] < r["lr_critic"] for r in logged)
    assert all(r["lr_generator"] == pytest.approx(r["lr_critic"] / 10) for r in logged)


def test_an_optimizer_a_custom_step_leaves_for_later_follows_its_schedule_without_a_warning(tmp_path):
    """The generator's optimizer first steps at step N_CRITIC, its scheduler from step 1: PyTorch's
    warning about a scheduler stepping first is for a mistake this is not."""
    import warnings

    from model_foundry.training import train

    config = load_config(write_config(tmp_path, "toy-gan", training={"max_steps": 4, "eval_every": 0, "save_every": 0}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def test_an_unknown_parameter_group_is_located(tmp_path):
    from model_foundry.training import train

    path = write_config(tmp_path, "toy-gan", training={"optimizers": {"discriminator": {"learning_rate": 0.001}}})
    with pytest.raises(ConfigError) as caught:
        train(load_config(path))
    assert f"{path}:" in str(caught.value)
    assert "training.optimizers.discriminator: this model has no parameter group 'discriminator'; " \
           "its parameter groups are generator, critic" in str(caught.value)
    path = write_config(tmp_path, training={"optimizers": {"generator": {"learning_rate": 0.001}}})
    with pytest.raises(ConfigError, match="it trains all its parameters with one optimizer"):
        train(load_config(path))
    assert not (tmp_path / "run").exists()


def test_two_optimizers_resume_exactly(tmp_path):
    """Interrupted at step 7 (Ctrl-C), its last checkpoint lost as if killed: resumed, every loss is the same bit for bit."""
    import shutil

    from model_foundry.training import train

    path = write_config(tmp_path, "toy-gan", training={
        "max_steps": 12, "gradient_accumulation_steps": 2, "log_every": 1, "eval_every": 6, "save_every": 4,
    })
    full = train(load_config(path))
    expected = records(tmp_path / "run")
    interrupted = train(load_config(path, ["model.ctrl_c_at_step=7"]), overwrite=True)
    assert interrupted.interrupted and interrupted.step == 7
    shutil.rmtree(tmp_path / "run" / "checkpoint-7")  # back to step 4, with the steps after it logged
    resumed = train(load_config(path), resume=True)
    drop_timing = [{k: v for k, v in r.items() if k not in ("elapsed", "samples_per_sec")} for r in records(tmp_path / "run")]
    assert drop_timing == [{k: v for k, v in r.items() if k not in ("elapsed", "samples_per_sec")} for r in expected]
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert (a == b).all()


def test_a_loss_returned_on_some_steps_only_is_the_mean_over_those_steps_also_across_a_resume(tmp_path):
    """generator_loss comes every N_CRITIC-th step: a record of steps 4-6 shows the mean of steps 4 and 6,
    also when the run resumes from the checkpoint at step 4, in the middle of that window."""
    import shutil

    from model_foundry.training import train

    path = write_config(tmp_path, "toy-gan", training={"max_steps": 6, "log_every": 3, "eval_every": 0, "save_every": 4})
    full = train(load_config(path))
    generator_losses = full.model.generator_losses  # steps 2, 4 and 6
    logged = records(tmp_path / "run")
    assert [r["generator_loss"] for r in logged] == pytest.approx(
        [generator_losses[0], (generator_losses[1] + generator_losses[2]) / 2], rel=1e-6)
    assert train(load_config(path, ["model.ctrl_c_at_step=5"]), overwrite=True).step == 5
    shutil.rmtree(tmp_path / "run" / "checkpoint-5")
    train(load_config(path), resume=True)
    drop_timing = [{k: v for k, v in r.items() if k not in ("elapsed", "samples_per_sec")} for r in records(tmp_path / "run")]
    assert drop_timing == [{k: v for k, v in r.items() if k not in ("elapsed", "samples_per_sec")} for r in logged]


# --- throughput ------------------------------------------------------------------------------


def test_throughput_counts_only_the_time_spent_training(tmp_path):
    """Each evaluation sleeps 5 x 0.05 s; the records' speed must not include it."""
    from model_foundry.training import train

    train(load_config(write_config(tmp_path, model={"eval_sleep": 0.05}, training={
        "max_steps": 6, "log_every": 1, "eval_every": 1, "save_every": 2,
    })))
    speeds = [r["samples_per_sec"] for r in records(tmp_path / "run") if "loss" in r]
    assert len(speeds) == 6
    assert min(speeds) > 16 / 0.1  # a window of one step of this model takes milliseconds, not the 0.25 s of evaluation


# --- extensions ------------------------------------------------------------------------------

EXTENSIONS = {"ema": {"decay": 0.8}, "augmentation": {"noise_std": 0.05}, "regularization": {"weight_penalty": 0.001}}


def test_extensions_transform_batches_add_losses_average_weights_and_resume_exactly(tmp_path):
    import shutil

    import torch

    from model_foundry import load
    from model_foundry.extensions import build_extensions, load_extension_states, sampling_weights
    from model_foundry.training import train

    path = write_config(tmp_path, training={"max_steps": 12, "log_every": 1, "eval_every": 6, "save_every": 6})
    config = json.loads(open(path).read())
    config["extensions"] = EXTENSIONS
    open(path, "w").write(json.dumps(config))
    full = train(load_config(path))
    run = tmp_path / "run"
    expected = records(run)
    trained = [r for r in expected if "loss" in r]
    assert all(r["regularization_loss"] > 0 for r in trained)  # each extension term is logged under its name
    assert (run / "final" / "extensions.safetensors").is_file() and (run / "checkpoint-6" / "extensions.safetensors").is_file()
    # The model itself saw noisy points: augmentation changed the training batches.
    from model_foundry.datasets import DataContext, load_data

    points = load_data(load_config(path).data, DataContext(str(tmp_path / "cache"))).train.arrays["vectors"]
    seen = np.concatenate([batch.numpy() for batch in full.model.training_batches])
    assert not np.isin(seen[:, 0], points[:, 0]).any()
    # Samples come from the averaged weights, which final/ keeps beside the model.
    final = load(str(run / "final"))
    extensions = build_extensions(EXTENSIONS, final)
    load_extension_states(extensions, str(run / "final"))
    written = np.load(run / "samples" / "step-12" / "samples.npy")
    with torch.no_grad(), sampling_weights(extensions, final):
        averaged = final.sample(32, generator=torch.Generator().manual_seed(42)).numpy()
    with torch.no_grad():
        raw = final.sample(32, generator=torch.Generator().manual_seed(42)).numpy()
    assert np.allclose(written, averaged, atol=1e-6) and not np.allclose(written, raw, atol=1e-3)
    average = extensions["ema"].state_dict()
    for name, initial in full.model.initial_state.items():  # an average along the way, neither end of it
        assert not torch.equal(average[f"shadow.{name}"], initial) and not torch.equal(average[f"shadow.{name}"], final.state_dict()[name])
    # Killed after step 6's checkpoint: the same losses, augmentation noise and averages included.
    shutil.rmtree(run / "checkpoint-12")
    shutil.rmtree(run / "final")
    resumed = train(load_config(path), resume=True)
    timing = ("elapsed", "samples_per_sec")
    assert [{k: v for k, v in r.items() if k not in timing} for r in records(run)] == \
        [{k: v for k, v in r.items() if k not in timing} for r in expected]
    assert np.array_equal(np.load(run / "samples" / "step-12" / "samples.npy"), written)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert (a == b).all()
