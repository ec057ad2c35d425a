"""The model contract: what the engine, evaluation and export read from an SR network, typed once.

Every srkd architecture (:data:`srkd.models.ARCHITECTURES`) satisfies :class:`SRModel`:

- ``scale`` (int): the factor it was built for;
- ``colour`` (``"rgb"`` or ``"y"``): 3-channel RGB or 1-channel luma input and output;
- ``img_range`` (float, default 1): the value range it works in internally (EDSR/RCAN/SwinIR scale [0, 1] images to
  255 inside; images in and out are always [0, 1]);
- ``upsample_input`` (bool): True when it expects an input already bicubic-upscaled to the output size (VDSR);
- ``spec`` (:class:`ModelSpec`): how :func:`srkd.models.build_model` built it (checkpoints are self-describing);
- ``feature_taps()``: tap name -> module path, for forward hooks (feature KD, progressive segments).

Code outside the architectures reads them through one accessor each (:func:`model_scale`, :func:`model_colour`,
:func:`model_img_range`, :func:`upsamples_input`, :func:`model_spec` / :func:`find_spec`, :func:`feature_taps`), which look through
DDP / ``torch.compile`` / EMA wrappers and give a network that is not an srkd architecture (a user's module) the
contract's defaults, instead of ``getattr(net, "colour", "rgb")`` probes spread over the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch.nn as nn
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from srkd.errors import SrkdError

Colour = Literal["rgb", "y"]


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class SRModel(Protocol):
    """What an srkd SR network exposes (see the module docstring)."""

    scale: int
    colour: Colour
    upsample_input: bool
    spec: ModelSpec

    def feature_taps(self) -> dict[str, str]: ...


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside DDP / DataParallel / AveragedModel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (DistributedDataParallel, DataParallel, AveragedModel)):
            model = model.module
        else:
            return model


def _attr(model: nn.Module, name: str, default: Any) -> Any:
    return getattr(unwrap_model(model), name, default)


def model_scale(model: nn.Module, default: int | None = None) -> int:
    """The ``scale`` the network was built for; ``default`` for a network without one (else an SrkdError)."""
    value = _attr(model, "scale", default)
    if value is None:
        raise SrkdError(f"{type(unwrap_model(model)).__name__} has no scale: not an srkd architecture")
    return int(value)


def model_colour(model: nn.Module) -> Colour:
    """``"rgb"`` (the default) or ``"y"``."""
    return "y" if _attr(model, "colour", "rgb") == "y" else "rgb"


def upsamples_input(model: nn.Module) -> bool:
    """Whether the network takes an input bicubic-upscaled to the output size (VDSR); False by default."""
    return bool(_attr(model, "upsample_input", False))


def model_img_range(model: nn.Module) -> float:
    """The internal value range (the network's ``img_range``, or its mean shift's); 1 by default."""
    net = unwrap_model(model)
    for owner in (net, getattr(net, "shift", None)):
        value = getattr(owner, "img_range", None)
        if isinstance(value, int | float):
            return float(value)
    return 1.0


def find_spec(model: nn.Module) -> ModelSpec | None:
    """How the model was built (``build_model`` records it), or None for a network built otherwise."""
    spec = _attr(model, "spec", None)
    return spec if isinstance(spec, ModelSpec) else None


def model_spec(model: nn.Module) -> ModelSpec:
    """How the model was built; an SrkdError for a network that :func:`srkd.models.build_model` did not build."""
    spec = find_spec(model)
    if spec is None:
        raise SrkdError(f"{type(model).__name__} was not built by srkd.models.build_model (no spec)")
    return spec


def feature_taps(model: nn.Module) -> dict[str, str]:
    """The model's tap table (name -> module path); every srkd architecture has one."""
    table = getattr(model, "feature_taps", None)
    if not callable(table):
        raise SrkdError(f"{type(model).__name__} has no feature_taps(): feature KD needs an srkd architecture")
    return dict(table())


__all__ = [
    "Colour",
    "ModelSpec",
    "SRModel",
    "feature_taps",
    "find_spec",
    "model_colour",
    "model_img_range",
    "model_scale",
    "model_spec",
    "unwrap_model",
    "upsamples_input",
]
