"""Quality runs of the flow plugin, for ``tests/benchmarks/generative_quality.py``.

- ``realnvp``, ``glow``: configs/flow-realnvp.yaml and configs/flow-glow.yaml on the digits;
  bits/dim on the validation split (a dequantisation bound) and the digits score of 1000 samples
  by ``foundry eval``; sampling and density (log_prob) CPU time per image.
- ``maf-moons``, ``maf-8gaussians``, ``nsf-moons``, ``nsf-8gaussians``: configs/flow-maf.yaml and
  configs/flow-nsf.yaml on each toy set; the held-out log-likelihood (nats per point, the negative
  validation loss) and a heat map of the learned density beside the samples.
- ``flow-step-overhead``: a training step (loss, backward, Adam) of this plugin's maf and nsf against
  zuko's own flow of the same size and weights, fastest of 20 alternating rounds.

Every time is process CPU time on one thread (the machine is shared).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

FAMILY = "Flows"
ROOT = Path(__file__).resolve().parents[4]
TIMED_IMAGES = 1000
ROUNDS, STEPS_PER_ROUND = 20, 25  # of the training-step comparison; the fastest round counts


def _cpu_seconds(function: Any) -> tuple[Any, float]:
    start = time.process_time()
    result = function()
    return result, time.process_time() - start


def _validation(bench: Any, checkpoint: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The loaded checkpoint's model and its data's validation split, as one batch."""
    opened, data = bench.load(checkpoint)
    return opened.model, data.validation.batch(range(len(data.validation)))


def _image_run(bench: Any, flow_type: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    run = bench.train(f"configs/flow-{flow_type}.yaml", "training.eval_every=0")
    metrics = bench.evaluate(run)
    model, validation = _validation(bench, run.checkpoint)
    images = validation["pixel_values"]
    with torch.no_grad():
        _, sampling = _cpu_seconds(lambda: model.sample(TIMED_IMAGES, generator=torch.Generator().manual_seed(0)))
        _, density = _cpu_seconds(lambda: model.log_prob(pixel_values=images))
    return {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes,
        "bits/dim": metrics["bits_per_dim"], "score": metrics["digits_score"], "Fréchet": metrics["digits_fid"],
        "sampling ms/image": 1000 * sampling / TIMED_IMAGES,
        "log_prob ms/image": 1000 * density / len(images),
        "samples": bench.sample_picture(run, f"flow-{flow_type}"),
    }


def measure_realnvp(bench: Any) -> dict[str, Any]:
    return _image_run(bench, "realnvp")


def measure_glow(bench: Any) -> dict[str, Any]:
    return _image_run(bench, "glow")


def _density_map(model: Any, points: torch.Tensor, path: Path, title: str) -> None:
    """A heat map of exp(log_prob) over the square around the data, with the data's extent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, high = float(points.min()) - 0.5, float(points.max()) + 0.5
    axis = torch.linspace(low, high, 300)
    grid = torch.cartesian_prod(axis, axis).flip(1)  # rows: y, columns: x
    with torch.no_grad():
        density = model.log_prob(vectors=grid).exp().reshape(300, 300)
    figure, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(density.numpy(), origin="lower", extent=(low, high, low, high), cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _vector_run(bench: Any, flow_type: str, dataset: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    name = f"{flow_type}-{dataset}"
    run = bench.train(f"configs/flow-{flow_type}.yaml", f"data.name={dataset}", "training.eval_every=0")
    metrics = bench.evaluate(run)
    model, validation = _validation(bench, run.checkpoint)
    heat_map = bench.media(f"flow-{name}-density.png")
    log_likelihood = -metrics["eval_loss"]
    _density_map(model, validation["vectors"], heat_map, f"{name}: held-out log-likelihood {log_likelihood:.3f}")
    return {
        "parameters": run.parameters, "CPU minutes": run.cpu_minutes,
        "held-out log-likelihood (nats/point)": log_likelihood,
        "samples": bench.link(heat_map) + " " + bench.sample_picture(run, f"flow-{name}", num_samples=2000),
    }


def measure_maf_moons(bench: Any) -> dict[str, Any]:
    return _vector_run(bench, "maf", "moons")


def measure_maf_8gaussians(bench: Any) -> dict[str, Any]:
    return _vector_run(bench, "maf", "8gaussians")


def measure_nsf_moons(bench: Any) -> dict[str, Any]:
    return _vector_run(bench, "nsf", "moons")


def measure_nsf_8gaussians(bench: Any) -> dict[str, Any]:
    return _vector_run(bench, "nsf", "8gaussians")


def _step_seconds(loss: Any, parameters: Any, steps: int) -> float:
    """CPU seconds per training step (loss, backward, Adam step)."""
    optimizer = torch.optim.Adam(parameters, lr=1e-4)

    def run() -> None:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss().backward()
            optimizer.step()

    return _cpu_seconds(run)[1] / steps


def measure_step_overhead(bench: Any) -> dict[str, Any]:
    import zuko

    from model_foundry import create_model
    from model_foundry.config import load_config

    torch.set_num_threads(1)
    points = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    row: dict[str, Any] = {"batch": 256}
    for flow_type in ("maf", "nsf"):
        config = load_config(ROOT / f"configs/flow-{flow_type}.yaml", sections=("model", "data"))
        model = create_model(config).train()
        params = model.params
        hidden = [params.hidden_channels] * params.hidden_layers
        if flow_type == "maf":
            reference = zuko.flows.MAF(features=2, transforms=params.steps_per_scale, hidden_features=hidden)
        else:
            reference = zuko.flows.NSF(features=2, bins=params.bins, transforms=params.steps_per_scale, hidden_features=hidden)
        reference.load_state_dict(model.flow.state_dict())  # the same flow, the same weights

        def ours(model: Any = model) -> torch.Tensor:
            return model(vectors=points).loss

        def zukos(reference: Any = reference) -> torch.Tensor:
            return -reference().log_prob(points).mean()

        torch.testing.assert_close(ours(), zukos())
        # Many short rounds, in alternating order, so that both see the same moments of a shared machine.
        mine, theirs = [], []
        for round_ in range(ROUNDS):
            pair = [(mine, ours, model), (theirs, zukos, reference)]
            for times, loss, module in pair if round_ % 2 == 0 else reversed(pair):
                times.append(_step_seconds(loss, module.parameters(), STEPS_PER_ROUND))
        mine, theirs = min(mine), min(theirs)
        row[f"{flow_type} ms/step"] = 1000 * mine
        row[f"zuko {flow_type} ms/step"] = 1000 * theirs
        row[f"{flow_type} overhead %"] = 100 * (mine / theirs - 1)
    return row


RUNS = {
    "realnvp": measure_realnvp,
    "glow": measure_glow,
    "maf-moons": measure_maf_moons,
    "maf-8gaussians": measure_maf_8gaussians,
    "nsf-moons": measure_nsf_moons,
    "nsf-8gaussians": measure_nsf_8gaussians,
    "flow-step-overhead": measure_step_overhead,
}
