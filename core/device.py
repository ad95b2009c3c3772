"""Where training runs: ``--device auto`` picks a CUDA GPU when PyTorch sees one, else the CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunegym.core.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DEVICE_HELP", "device_of", "resolve_device"]

DEVICE_HELP = "auto (a CUDA GPU when there is one, else cpu), cpu, cuda or cuda:N"


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cpu``/``cuda``/``cuda:N`` as given, checked to exist."""
    import torch  # lazily: the CLI reads DEVICE_HELP without loading PyTorch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s); pick cuda:0..")
    elif device.type != "cpu":
        raise UserError(f"device {name!r} is not supported; use {DEVICE_HELP}")
    return device


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (CPU for a model with neither)."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
