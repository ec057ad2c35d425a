"""Model statistics as the papers report them: parameters, FLOPs and latency.

FLOPs follow DUKD Table 1, which (like most SR papers) reports multiply-accumulates and calls them FLOPs:
EDSR 256f/32b x4 on a 3x256x256 input is 3293.35 "GFLOPs", which is its MAC count (bias additions, activations
and pixel shuffles not counted). :func:`count_flops` therefore returns ``torch.utils.flop_counter``'s total / 2.
The count runs on the meta device, so even the 43M EDSR on a 256x256 input costs no compute or memory.

``input_shape`` is always the low-resolution image (C, H, W). Pre-upsampling networks (VDSR) are measured on its
``scale``-times upscale, which is what they actually process; the bicubic upscale itself is not counted.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from srkd.errors import SrkdError
from srkd.models import model_scale, to_channels_last, upsamples_input
from srkd.models.taps import unwrap_model
from srkd.precision import AMP_DTYPES

PRECISIONS = {"fp32": torch.float32, **AMP_DTYPES}


def count_params(model: nn.Module) -> int:
    """All parameters (trainable or frozen), each shared tensor once."""
    return sum(p.numel() for p in unwrap_model(model).parameters())


def network_input_shape(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """(1, C, H, W) the network itself sees for an LR image of ``input_shape``; checks the channel count.

    The data-free generator takes a latent vector, (1, latent_dim), whatever ``input_shape`` says.
    """
    net = unwrap_model(model)
    if hasattr(net, "latent_dim"):
        return (1, int(getattr(net, "latent_dim")))  # noqa: B009 - torch types module attributes as Tensor
    if len(input_shape) != 3:
        raise SrkdError(f"input shape must be C x H x W, got {'x'.join(map(str, input_shape))}")
    c, h, w = (int(v) for v in input_shape)
    expected = getattr(net, "in_channels", c)
    if c != expected:
        raise SrkdError(
            f"{type(net).__name__} takes {expected}-channel input ({getattr(net, 'colour', '?')}), "
            f"got input shape {c}x{h}x{w}"
        )
    if upsamples_input(net):
        s = model_scale(net)
        h, w = h * s, w * s
    return (1, c, h, w)


def count_flops(model: nn.Module, input_shape: Sequence[int] = (3, 256, 256)) -> float:
    """Multiply-accumulates of one forward pass on a (1, *input_shape) LR image ("FLOPs" as in DUKD Table 1)."""
    net = unwrap_model(model)
    shape = network_input_shape(net, input_shape)
    meta = {n: torch.empty_like(t, device="meta") for n, t in (*net.named_parameters(), *net.named_buffers())}
    x = torch.empty(shape, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        functional_call(net, meta, (x,))
    return counter.get_total_flops() / 2


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 256, 256),
    device: str | torch.device = "cpu",
    warmup: int = 3,
    iters: int = 10,
    precision: str = "fp32",
) -> float:
    """Median wall-clock seconds of one batch-1 inference (eval mode, no grad) after ``warmup`` runs.

    The model is moved to ``device`` (and left there, in channels_last); its train/eval mode is restored.
    bf16/fp16 run under autocast. Every precision on every device runs in channels_last, the layout srkd's
    inference uses (:func:`srkd.evaluation.upscale.network_forward`), so the latency is that of what srkd runs:
    oneDNN's bf16 kernels need it, it is faster in fp32 on CPU too, and cuDNN's tensor-core kernels are NHWC.
    """
    if precision not in PRECISIONS:
        raise SrkdError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if iters < 1:
        raise SrkdError(f"iters must be >= 1, got {iters}")
    device = torch.device(device)
    net = unwrap_model(model).to(device)
    was_training = net.training
    net.eval()
    x = torch.rand(network_input_shape(net, input_shape), device=device)
    low = precision != "fp32"
    if x.dim() == 4:  # not the generator's (1, latent_dim) input
        net = to_channels_last(net)
        x = x.contiguous(memory_format=torch.channels_last)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    # fp32 opens no autocast context at all: torch.autocast refuses device types it does not know, even disabled
    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision]) if low else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for i in range(warmup + iters):
            sync()
            start = time.perf_counter()
            net(x)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    net.train(was_training)
    return statistics.median(times)


__all__ = ["count_flops", "count_params", "measure_latency", "network_input_shape"]
