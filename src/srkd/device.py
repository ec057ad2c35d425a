"""One rule for turning a ``--device`` / ``train.device`` value into a torch device, for every command.

``auto`` is CUDA when torch sees a GPU, else the CPU (under ``torchrun`` the engine then picks the process's
local rank's GPU);
``None`` means "where the model already is", so validation during training never moves the student. A device the
machine does not have is one :class:`~srkd.errors.SrkdError` line naming it, before any work starts.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from srkd.errors import SrkdError


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def resolve_device(
    device: str | torch.device | None,
    model: nn.Module | None = None,
    *,
    what: str = "device",
) -> torch.device:
    """The torch device for ``device`` (see the module docstring); ``what`` names the setting in errors."""
    if device is None:
        return model_device(model) if model is not None else torch.device("cpu")
    name = device.strip().lower() if isinstance(device, str) else device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise SrkdError(f"unknown device '{str(device)[:40]}' for {what} (e.g. auto, cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SrkdError(f"{what} '{device}' requested but CUDA is not available on this machine (use auto or cpu)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise SrkdError(f"{what} '{device}' requested but MPS is not available on this machine")
    return dev


__all__ = ["model_device", "resolve_device"]
