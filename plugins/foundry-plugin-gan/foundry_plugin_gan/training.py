"""The custom training step of every GAN architecture (``foundry_training_steps``).

One optimizer step of the loop is one discriminator update per micro-batch, and, every
``n_critic``-th step, one generator update from the gradient accumulated over all the
micro-batches (docs/training.md, "Custom training steps"). Both players go through the
core's several-optimizer path: ``context.backward`` and ``context.step_optimizer`` (clipping,
mixed precision, DDP), one AdamW per parameter group (``generator``, ``discriminator``), each
saved in checkpoints and restored on resume.

The discriminator's pass detaches the generated examples, so its backward reaches no
generator weight; the generator's pass does reach the discriminator's weights, and the loop
zeroes those gradients before the next step, so they never feed a discriminator update.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


def adversarial_step(model: Any, batches: list[dict[str, Any]], context: Any) -> dict[str, torch.Tensor]:
    """Train the discriminator on each micro-batch, then the generator every ``n_critic``-th step.

    Returns ``loss`` (the discriminator's mean loss, its gradient penalty included),
    ``gradient_penalty_loss`` where the model has one, and ``generator_loss`` on the steps
    that update the generator.
    """
    # The model itself is DDP's .module on several processes. (accelerator.unwrap_model looks up
    # installed packages on every call: about 0.1 ms, 1 % of a small GAN's step.)
    n_critic = getattr(model, "module", model).config.n_critic
    totals: dict[str, torch.Tensor] = {}
    for batch in batches:  # each micro-batch is one discriminator update: no accumulation across them
        output = model(**batch, part=DISCRIMINATOR)
        context.backward(output.loss)
        context.step_optimizer(DISCRIMINATOR)
        for key, value in output.items():
            totals[key] = totals[key] + value.detach() if key in totals else value.detach()
    result = {key: total / len(batches) for key, total in totals.items()} if len(batches) > 1 else totals
    if context.step % n_critic == 0:
        generator_loss = None
        for index, batch in enumerate(batches):
            with contextlib.nullcontext() if index == len(batches) - 1 else context.no_sync():
                loss = model(**batch, part=GENERATOR).loss
                context.backward(loss if len(batches) == 1 else loss / len(batches))
            generator_loss = loss.detach() if generator_loss is None else generator_loss + loss.detach()
        context.step_optimizer(GENERATOR)
        result["generator_loss"] = generator_loss / len(batches)
    return result
