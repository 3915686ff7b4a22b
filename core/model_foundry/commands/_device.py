"""``--device`` for the commands that run a saved model (``generate``, ``eval``)."""

from __future__ import annotations

from typing import Any

KINDS = ("cpu", "cuda", "mps", "xpu")


def add_device_argument(parser: Any) -> None:
    parser.add_argument(
        "--device", default="cpu", help="where to run the model: cpu, cuda, cuda:N, mps or xpu (default: cpu)"
    )


def device_from(text: str) -> Any:
    """``--device`` as a ``torch.device``; a :class:`FoundryError` (exit 2) if it is not one, or not here."""
    import torch

    from model_foundry.errors import FoundryError

    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in KINDS:
        raise FoundryError(f"--device {text!r} is not a device; use one of {', '.join(KINDS)} (cuda:N for the N-th GPU)")
    backend = {"cuda": torch.cuda, "mps": torch.backends.mps, "xpu": getattr(torch, "xpu", None)}.get(device.type)
    if backend is not None and not (backend and backend.is_available()):
        raise FoundryError(f"--device {text}: this machine has no {device.type} device; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FoundryError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device
