"""SR architectures, one file each, and the registry that lets configs and checkpoints name them.

The registry is an explicit table (no import-time registration side effects). Every model:

- takes float images in [0, 1], shape ``(N, C, h, w)``, and returns ``(N, C, s*h, s*w)`` in [0, 1] scale
  (not clamped); ``C`` is 3 for ``colour == "rgb"`` models and 1 for ``"y"`` models (VDSR);
- exposes ``scale`` (int), ``colour`` (``"rgb"`` or ``"y"``) and ``upsample_input`` (True when the network
  expects an input already bicubic-upscaled to the output size, as VDSR does);
- exposes ``head``, ``body`` (an ``nn.Sequential`` of blocks, split into segments by progressive distillation
  and feature KD) and ``tail`` attributes, and ``feature_taps()`` (tap name -> module path) for forward hooks;
  each body block has ``identity_()``, which makes it compute its input (function-preserving growth);
- records how it was built in ``model.spec`` (:class:`ModelSpec`) so checkpoints are self-describing.

The contract is typed in :mod:`srkd.models.base` (``SRModel``), with one accessor per attribute for code outside
the architectures.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, TypeVar

import torch
import torch.nn as nn

from srkd.errors import SrkdError
from srkd.models.base import ModelSpec, model_scale, model_spec, unwrap_model, upsamples_input
from srkd.models.layout import Layout
from srkd.ops.imresize import imresize

# name -> "module:Class". Adding an architecture = one file (network + its checkpoint LAYOUTS) + one line here.
ARCHITECTURES: dict[str, str] = {
    "vdsr": "srkd.models.vdsr_arch:VDSR",
    "edsr": "srkd.models.edsr_arch:EDSR",
    "rcan": "srkd.models.rcan_arch:RCAN",
    "swinir": "srkd.models.swinir_arch:SwinIR",
    # Published efficient-SR networks, with their authors' key names (teachers from `srkd teachers`, or students)
    "bsrn": "srkd.models.bsrn_arch:BSRN",
    "smfanet": "srkd.models.smfanet_arch:SMFANet",
    "imdn": "srkd.models.imdn_arch:IMDN",
    "rfdn": "srkd.models.rfdn_arch:RFDN",
    "carn_m": "srkd.models.carn_arch:CARNM",
    "pan": "srkd.models.pan_arch:PAN",
    "generator": "srkd.models.generator_arch:Generator",
}


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def to_channels_last(module: ModuleT) -> ModuleT:
    """4-D weights to channels_last, in place: the layout oneDNN and cuDNN run bf16 convolutions fastest in."""
    return module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # valid; not in torch's stubs


def get_class(arch: str) -> type[nn.Module]:
    try:
        target = ARCHITECTURES[arch.lower()]
    except KeyError:
        raise SrkdError(f"unknown architecture '{arch}' (known: {', '.join(sorted(ARCHITECTURES))})") from None
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def all_layouts() -> list[Layout]:
    """Every published checkpoint layout srkd can convert: each architecture module's ``LAYOUTS``, in registry
    order (detection tries them in this order; their markers are disjoint, which the tests check)."""
    found: list[Layout] = []
    for target in ARCHITECTURES.values():
        found.extend(getattr(importlib.import_module(target.split(":")[0]), "LAYOUTS", ()))
    return found


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiate ``arch`` with keyword arguments; a bad keyword is a user error with the accepted ones listed."""
    cls = get_class(arch)
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise SrkdError(f"{arch}: {exc} (accepted arguments: {', '.join(params)})") from None
    model.spec = ModelSpec(arch.lower(), dict(kwargs))  # type: ignore[assignment]  # stubs: Tensor | Module only
    return model


__all__ = ["ARCHITECTURES", "ModelSpec", "all_layouts", "build_model", "get_class", "model_scale", "model_spec", "to_channels_last"]


def run_sr(model: nn.Module, lr: torch.Tensor, scale: int | None = None) -> torch.Tensor:
    """Super-resolve ``lr`` with ``model``, the one place that knows about pre-upsampling networks.

    Networks with ``upsample_input`` (VDSR) get the MATLAB-bicubic upscaled input, clamped to [0, 1] as the
    reference implementations do; the others get ``lr`` as is. The resize is differentiable, so gradients reach
    a generator that produced ``lr`` (data-free distillation).
    """
    net = unwrap_model(model)
    if upsamples_input(net):
        lr = imresize(lr, scale=scale or model_scale(net)).clamp(0.0, 1.0)
    return model(lr)


__all__ += ["run_sr"]
