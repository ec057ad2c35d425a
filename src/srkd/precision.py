"""Which autocast precision a device runs fast, so that one recipe serves every machine.

bf16 autocast is srkd's fast path where the hardware has bf16 kernels: GPUs from Ampere on, and CPUs whose oneDNN
has them (AVX512-BF16 or AMX; with channels_last ~4x faster than fp32 on the development CPU). Everywhere else
bf16 is *emulated*, and far slower than fp32: an EDSR 16f/32b x4 training step (batch 16, LR 32) measured 4.0 s
in bf16 against 0.36 s in fp32 on an AVX2-only 2-core EPYC (2026-11-22). A recipe therefore says
``precision: auto`` and gets bf16 only where it pays; an explicit ``bf16`` is obeyed, with a warning where it is
emulated.
"""

from __future__ import annotations

import torch

# The autocast dtype of each mixed precision (fp32: no autocast).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Does ``device`` run bf16 convolutions natively (not emulated)?"""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch build without oneDNN
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; any other value is returned as it is."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


TRAIN_FIX = "set train.precision=auto (bf16 only where it is fast) or fp32"


def precision_warning(precision: str, device: torch.device, fix: str = TRAIN_FIX) -> str | None:
    """Why ``precision`` (as given) will be slow on ``device``, ending with ``fix``; None if it will not."""
    if precision == "bf16" and not native_bf16(device):
        where = "this CPU has neither AVX512-BF16 nor AMX" if device.type == "cpu" else f"{device} has no bf16 units"
        return (f"precision bf16: {where}, so bf16 is emulated and runs many times slower than fp32 (measured 11x "
                f"for an EDSR training step on an AVX2 CPU); {fix}")
    if precision == "fp16" and device.type == "cpu":
        return f"precision fp16: fp16 autocast on a CPU is slow; {fix}"
    return None


__all__ = ["AMP_DTYPES", "native_bf16", "precision_warning", "resolve_precision"]
