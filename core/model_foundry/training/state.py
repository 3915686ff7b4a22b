"""Training state on disk without pickle: tensors in safetensors, everything else in JSON.

A training checkpoint is a model checkpoint (see :mod:`model_foundry.checkpoint`) plus two
files written inside the same atomic directory write:

* ``training_state.json`` — step, data position, running metrics, each optimizer's structure
  (param groups, non-tensor state) and scheduler by name, and each process's Python and
  numpy RNG;
* ``training_state.safetensors`` — the optimizers' tensors (``optimizer.<name>.<param>.<field>``),
  and each process's torch (and CUDA) RNG and collator generator states.

Checkpoints written before models could have several optimizers hold one ``optimizer`` and
one ``scheduler``; they read as the optimizer and scheduler named ``model``.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Mapping

import numpy as np
import torch

STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"


# The name of the one optimizer of a model that names no parameter groups (and of the one
# optimizer of a checkpoint written before there could be several).
DEFAULT_OPTIMIZER = "model"


def flatten_optimizer_state(
    state_dict: Mapping[str, Any], prefix: str = "optimizer"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split ``optimizer.state_dict()`` into JSON-able structure and tensors named ``<prefix>.<param>.<field>``."""
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        state[str(param_id)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                key = f"{prefix}.{param_id}.{name}"
                tensors[key] = value.detach().cpu().contiguous()
                state[str(param_id)][name] = {"tensor": key}
            else:
                state[str(param_id)][name] = {"value": value}
    return {"state": state, "param_groups": list(state_dict["param_groups"])}, tensors


def unflatten_optimizer_state(structure: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer_state`."""
    state = {
        int(param_id): {name: tensors[entry["tensor"]] if "tensor" in entry else entry["value"] for name, entry in entries.items()}
        for param_id, entries in structure["state"].items()
    }
    return {"state": state, "param_groups": [dict(group) for group in structure["param_groups"]]}


def capture_rng(collator_generator: torch.Generator) -> dict[str, Any]:
    """This process's random states, as JSON-able data (torch states as lists of bytes)."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        states["cuda"] = [state.tolist() for state in torch.cuda.get_rng_state_all()]
    states["collator"] = collator_generator.get_state().tolist()
    return states


def restore_rng(states: Mapping[str, Any], collator_generator: torch.Generator) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(_bytes(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes(state) for state in states["cuda"]])
    if "collator" in states:  # older checkpoints of runs without masking have none
        collator_generator.set_state(_bytes(states["collator"]))


def _bytes(values: Any) -> torch.Tensor:
    return values if torch.is_tensor(values) else torch.tensor(values, dtype=torch.uint8)


_TORCH_RNG_KEYS = ("torch", "collator")


def write_training_state(
    directory: str, state: Mapping[str, Any], optimizer_states: Mapping[str, Mapping[str, Any]],
    rng_per_process: list[dict[str, Any]],
) -> None:
    """Write the two training-state files into ``directory`` (a checkpoint's staging directory).

    ``optimizer_states`` maps each optimizer's name to its ``state_dict()``.
    """
    from safetensors.torch import save_file

    structures, tensors = {}, {}
    for name, optimizer_state in optimizer_states.items():
        structures[name], own = flatten_optimizer_state(optimizer_state, f"optimizer.{name}")
        tensors.update(own)
    processes = []
    for rank, states in enumerate(rng_per_process):
        light = dict(states)
        for key in _TORCH_RNG_KEYS:
            if key in light:
                tensors[f"rng.{rank}.{key}"] = _bytes(light.pop(key))
        for index, cuda_state in enumerate(light.pop("cuda", [])):
            tensors[f"rng.{rank}.cuda.{index}"] = _bytes(cuda_state)
        processes.append(light)
    save_file(tensors, os.path.join(directory, STATE_TENSORS))
    with open(os.path.join(directory, STATE_JSON), "w", encoding="utf-8") as handle:
        json.dump({**state, "optimizers": structures, "rng": processes}, handle)


def read_training_state(directory: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """``(state, {optimizer name: state_dict}, rng_per_process)`` from a training checkpoint."""
    from safetensors.torch import load_file

    with open(os.path.join(directory, STATE_JSON), encoding="utf-8") as handle:
        state = json.load(handle)
    tensors = load_file(os.path.join(directory, STATE_TENSORS))
    if "optimizer" in state:
        state["optimizers"] = {DEFAULT_OPTIMIZER: state.pop("optimizer")}
        state["schedulers"] = {DEFAULT_OPTIMIZER: state.pop("scheduler")}
    optimizer_states = {name: unflatten_optimizer_state(s, tensors) for name, s in state.pop("optimizers").items()}
    processes = []
    for rank, light in enumerate(state.pop("rng")):
        states = dict(light)
        for key in _TORCH_RNG_KEYS:
            if f"rng.{rank}.{key}" in tensors:
                states[key] = tensors[f"rng.{rank}.{key}"]
        prefix = f"rng.{rank}.cuda."
        cuda = [tensors[k] for k in sorted((t for t in tensors if t.startswith(prefix)), key=lambda t: int(t[len(prefix):]))]
        if cuda:
            states["cuda"] = cuda
        processes.append(states)
    return state, optimizer_states, processes


def is_training_checkpoint(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, STATE_JSON)) and os.path.isfile(os.path.join(directory, STATE_TENSORS))
