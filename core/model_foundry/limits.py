"""Sizes a config may ask for, checked before anything is allocated.

A model is sized up by building it on the meta device (no memory) under a bound: the build
is stopped with a :class:`~model_foundry.errors.FoundryError` as soon as it has registered more
parameter elements than allowed, or has run longer than ``FOUNDRY_BUILD_SECONDS`` (a
config asking for 100,000 layers would otherwise take minutes even on the meta device). The
memory a run may use is the machine's physical memory unless ``FOUNDRY_MEMORY_LIMIT`` says
otherwise (bytes, or with a K/M/G/T suffix: ``16G``). See docs/cli.md (``foundry validate``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from typing import Any, Callable, Iterator

from model_foundry.commands._output import human_bytes, human_count
from model_foundry.errors import FoundryError

MEMORY_ENV = "FOUNDRY_MEMORY_LIMIT"
BUILD_SECONDS_ENV = "FOUNDRY_BUILD_SECONDS"
DEFAULT_BUILD_SECONDS = 10.0
# Training with AdamW in float32 holds weights, gradients and two moments: 16 bytes per parameter.
TRAINING_BYTES_PER_PARAMETER = 16
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _env_number(variable: str, pattern: str) -> re.Match[str] | None:
    value = os.environ.get(variable, "").strip()
    if not value:
        return None
    match = re.fullmatch(pattern, value, flags=re.IGNORECASE)
    if match is None:
        raise FoundryError(f"{variable}={value!r} is not understood; expected e.g. {variable}=" +
                           ("16G (bytes, with an optional K, M, G or T suffix)" if variable == MEMORY_ENV else "30 (seconds)"))
    return match


def memory_limit() -> int:
    """Bytes a run may use: ``FOUNDRY_MEMORY_LIMIT``, else the machine's physical memory."""
    match = _env_number(MEMORY_ENV, r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?")
    if match is not None:
        return int(float(match.group(1)) * _SUFFIXES[match.group(2).upper()])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def build_seconds() -> float:
    """How long a build on the meta device may take, in CPU seconds: ``FOUNDRY_BUILD_SECONDS``, else 10."""
    match = _env_number(BUILD_SECONDS_ENV, r"\d+(?:\.\d+)?")
    return float(match.group()) if match is not None else DEFAULT_BUILD_SECONDS


# In-place initialisers: on the meta device they only write values, which meta tensors do not have.
_INITIALISERS = ("normal_", "uniform_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_",
                 "copy_", "exponential_", "random_", "bernoulli_", "log_normal_", "cauchy_", "geometric_")
def _divided(numerator: Any, denominator: Any = None, *_: Any) -> Any:
    """The meta result of a floating-point division (broadcast shape), or None: run the division."""
    import torch

    if denominator is None or not numerator.is_floating_point():
        return None
    return numerator.new_empty(torch.broadcast_shapes(numerator.shape, getattr(denominator, "shape", ())))


# Functions torch runs on meta tensors through slow Python decompositions (the first importing torch._dynamo:
# about 2 CPU s), each with the meta result it has for positional arguments whose first is a meta tensor (None:
# run the function): torch's spectral norm runs mv and normalize 32 times per layer as it is set up, then vdot
# and div for its first weight / sigma.
_META_RESULTS: dict[str, Callable[..., Any]] = {
    "normalize": lambda tensor, *_: tensor,
    "mv": lambda matrix, *_: matrix.new_empty(matrix.shape[:-1]),
    "vdot": lambda vector, *_: vector.new_empty(()),
    "div": _divided,
}


def _initialisers_skipped_on_meta() -> Any:
    """A torch function mode in which the in-place initialisers of :data:`_INITIALISERS` return a meta
    tensor untouched, and the functions of :data:`_META_RESULTS` return a meta result of the right shape
    (or their ``out=``).
    Torch runs them on the meta device through Python decompositions (~2 ms per ``normal_``): for
    GPT-2 base that was most of a build on meta, and of loading a checkpoint; torch's spectral norm
    runs its power iteration as it is set up: 4.7 CPU s to load an 11-layer ``deep_ebm`` (its first
    ``mv`` imports torch._dynamo), against about 0.1 s with these shortcuts."""
    import torch
    from torch.overrides import TorchFunctionMode

    # torch.nn.init's functions hand themselves to the mode before calling the tensor's method, and may be
    # wrapped by then (transformers swaps in its own while it initialises): they are known by name.
    skipped = set(_INITIALISERS) | {name for name in dir(torch.nn.init) if name.endswith("_") and not name.startswith("_")}

    class SkipInitialisersOnMeta(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            name, kwargs = getattr(func, "__name__", None), kwargs or {}
            if name in skipped:
                # torch.nn.init hands over its arguments by keyword, a tensor method by position.
                target = args[0] if args else kwargs.get("tensor")
                if isinstance(target, torch.Tensor) and target.is_meta:
                    return target
            elif name in _META_RESULTS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
                if kwargs.get("out") is not None:
                    return kwargs["out"]
                result = _META_RESULTS[name](*args)
                if result is not None:
                    return result
            return func(*args, **kwargs)

    return SkipInitialisersOnMeta()


@contextlib.contextmanager
def bounded_build(max_elements: int | None, why: str, seconds: float | None = None,
                  parameters_on_meta: bool = False) -> Iterator[None]:
    """Stop any model built inside the block once it registers more than ``max_elements`` parameter
    elements (each parameter counted once, however often it is tied), or once it has taken ``seconds``
    of this process's CPU time (default :func:`build_seconds`; CPU time, so that a machine busy with other
    work does not stop a build, e.g. torch's one-time set-up of spectral norm on the meta device). ``why`` ends the message: what the bound is and what to do.

    Initialisers on meta tensors are skipped. With ``parameters_on_meta``, every parameter is moved to the
    meta device as it is registered (buffers stay where they are built), so that a checkpoint's weights can
    be assigned in its place without initialising it first."""
    import torch
    from torch.nn.modules import module

    seconds = build_seconds() if seconds is None else seconds
    seen: set[int] = set()
    on_meta: dict[int, tuple[Any, Any]] = {}  # id(parameter) -> (parameter, its meta replacement)
    tally = {"elements": 0, "tensors": 0}
    started: list[float] = []  # at the first parameter: importing the plugin's model code is not building

    def count(_module: Any, _name: str, parameter: Any) -> Any:
        if parameter is None or id(parameter) in seen:
            # A parameter registered twice (tied) is the same meta replacement both times.
            return on_meta[id(parameter)][1] if id(parameter) in on_meta else None
        # CPU time of this process, not the wall clock: a busy machine must not make a model too large.
        start = started[0] if started else started.append(time.process_time()) or started[0]
        seen.add(id(parameter))
        tally["elements"] += parameter.numel()
        tally["tensors"] += 1
        so_far = f"{human_count(tally['elements'])} parameters in {tally['tensors']:,} tensors"
        if max_elements is not None and tally["elements"] > max_elements:
            raise FoundryError(f"the model is larger than {human_count(max_elements)} parameters (the build on the "
                               f"meta device was stopped at {so_far}); {why}")
        if time.process_time() - start > seconds:
            raise FoundryError(f"building the model on the meta device took over {seconds:g} CPU seconds and was stopped at "
                               f"{so_far}: the config describes a very large model (check layer counts and sizes); "
                               f"{why} (the time limit is {BUILD_SECONDS_ENV})")
        if parameters_on_meta and not parameter.is_meta:
            replacement = torch.nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
            on_meta[id(parameter)] = (parameter, replacement)
            seen.add(id(replacement))
            return replacement
        return None

    handle = module.register_module_parameter_registration_hook(count)
    try:
        with _initialisers_skipped_on_meta():
            yield
    finally:
        handle.remove()


def build_on_meta(config: Any, max_elements: int | None, why: str, registry: Any = None) -> Any:
    """The model ``config`` describes, built on the meta device within :func:`bounded_build`."""
    from model_foundry.factory import create_model

    with bounded_build(max_elements, why):
        return create_model(config, device="meta", registry=registry)


def training_bound() -> tuple[int, str]:
    """The most parameters training with AdamW fits in :func:`memory_limit`, and the end of the message that
    refuses more (for :func:`build_on_meta`)."""
    limit = memory_limit()
    source = MEMORY_ENV if os.environ.get(MEMORY_ENV, "").strip() else "this machine's memory"
    most = limit // TRAINING_BYTES_PER_PARAMETER
    return most, (
        f"training with AdamW needs {TRAINING_BYTES_PER_PARAMETER} bytes per parameter (weights, gradients, 2 moments; "
        f"activations not included), so at most {human_count(most)} parameters fit in {human_bytes(limit)} ({source}); "
        f"make the model smaller, or set {MEMORY_ENV} if it is meant for a larger machine"
    )
