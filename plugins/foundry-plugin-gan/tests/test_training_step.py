"""The adversarial step: which player each update changes, the generator's gradient, n_critic."""

from __future__ import annotations

import copy

import pytest
import torch
from foundry_plugin_gan.training import adversarial_step

from model_foundry import create_model
from model_foundry.config import TrainingConfig
from model_foundry.training.loop import StepContext, build_optimizers


class Recorder:
    """Wraps ``context.step_optimizer``: the generator's and the discriminator's weights around every
    update, and the generator's gradient at its update against one computed from its loss alone."""

    def __init__(self, model, context):
        self.model, self.context, self.updates = model, context, []
        self._rng_before_generator_pass = None

    def weights(self, part):
        return [p.detach().clone() for p in getattr(self.model, part).parameters()]

    def __call__(self, name):
        if name == "generator":
            self.check_generator_gradient()
        before = {part: self.weights(part) for part in ("generator", "discriminator")}
        grads = {part: [p.grad for p in getattr(self.model, part).parameters()] for part in ("generator", "discriminator")}
        StepContext.step_optimizer(self.context, name)
        after = {part: self.weights(part) for part in ("generator", "discriminator")}
        self.updates.append((name, before, after, grads))
        self._rng_before_generator_pass = torch.get_rng_state()

    def check_generator_gradient(self):
        """The gradient of the generator's loss alone, on the noise its pass drew (the RNG state after the last
        discriminator update), through a copy of the model as it is now."""
        state = torch.get_rng_state()
        reference = copy.deepcopy(self.model)
        reference.zero_grad(set_to_none=True)
        torch.set_rng_state(self._rng_before_generator_pass)
        for batch in self.batches:
            (reference(**batch, part="generator").loss / len(self.batches)).backward()
        torch.set_rng_state(state)
        for ours, theirs in zip(self.model.generator.parameters(), reference.generator.parameters(), strict=True):
            torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-6, atol=1e-8)


class RecordingContext(StepContext):
    """The core's context, each optimizer update going through a :class:`Recorder`."""

    def step_optimizer(self, name):
        self.recorder(name)


def setup(architecture="gan", **fields):
    from accelerate import Accelerator

    torch.manual_seed(0)
    model = create_model({"architecture": architecture, "preset": "tiny", **fields})
    training = TrainingConfig(learning_rate=0.01, max_grad_norm=None)
    optimizers = build_optimizers(model, training)
    context = RecordingContext(Accelerator(cpu=True), model, optimizers, {}, training, 1)
    recorder = context.recorder = Recorder(model, context)
    recorder.batch = {"pixel_values": torch.rand(8, 1, 8, 8) * 2 - 1, "class_labels": torch.arange(8)}
    recorder.batches = [recorder.batch]
    return model, context, recorder


def changed(before, after):
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("architecture", ["gan", "wgan"])
def test_the_discriminators_update_never_changes_the_generator_and_the_generators_never_the_discriminator(architecture):
    model, context, recorder = setup(architecture, n_critic=2)
    for step in (1, 2):
        context.step = step
        model.zero_grad(set_to_none=True)  # as the loop does before each step
        result = adversarial_step(model, [recorder.batch], context)
        assert ("generator_loss" in result) == (step == 2)
    assert [name for name, *_ in recorder.updates] == ["discriminator", "discriminator", "generator"]
    for name, before, after, grads in recorder.updates:
        other = "discriminator" if name == "generator" else "generator"
        assert changed(before[name], after[name]), f"the {name}'s update changed nothing"
        assert not changed(before[other], after[other]), f"the {name}'s update changed the {other}'s weights"
        if name == "discriminator":  # generated examples are detached: no gradient reaches the generator
            assert all(grad is None for grad in grads["generator"])


def test_the_generator_is_updated_every_n_critic_th_step_and_the_discriminator_on_every_micro_batch():
    model, context, recorder = setup(n_critic=3)
    recorder.batches = [recorder.batch, {"pixel_values": -recorder.batch["pixel_values"]}]
    for step in range(1, 7):
        context.step = step
        model.zero_grad(set_to_none=True)
        adversarial_step(model, recorder.batches, context)
    names = [name for name, *_ in recorder.updates]
    assert names.count("discriminator") == 12 and names.count("generator") == 2
    assert [i for i, name in enumerate(names) if name == "generator"] == [6, 13]  # after steps 3 and 6's critics


def test_the_step_reports_the_discriminators_loss_its_penalty_and_the_generators_loss():
    model, context, recorder = setup("wgan", n_critic=1)
    result = adversarial_step(model, [recorder.batch], context)
    assert set(result) == {"loss", "gradient_penalty_loss", "generator_loss"}
    assert all(value.dim() == 0 and not value.requires_grad for value in result.values())
    assert float(result["gradient_penalty_loss"]) > 0


def test_under_distributed_data_parallel_the_step_reads_n_critic_from_the_wrapped_model(tmp_path):
    from torch.nn.parallel import DistributedDataParallel

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model, context, recorder = setup(n_critic=2)
        wrapped = context.model = DistributedDataParallel(model, find_unused_parameters=True)
        for step in range(1, 5):
            context.step = step
            model.zero_grad(set_to_none=True)
            adversarial_step(wrapped, recorder.batches, context)
    finally:
        torch.distributed.destroy_process_group()
    names = [name for name, *_ in recorder.updates]
    assert names == ["discriminator", "discriminator", "generator", "discriminator", "discriminator", "generator"]
