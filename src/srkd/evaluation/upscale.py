"""Inference: the one place that turns an LR image into an SR image, whole or in tiles.

Both ``srkd eval`` and ``srkd upscale`` go through :func:`super_resolve`, so a number measured by ``eval`` is the
number a user gets from ``upscale``. It knows the two families of networks:

- RGB networks (EDSR, RCAN, SwinIR...) map the LR image straight to the SR image;
- Y-channel networks that expect a pre-upsampled input (VDSR) get the luma of the MATLAB-bicubic upscale of the
  LR image, kept in float as in the VDSR authors' test code; the network's luma is recombined with the upscaled
  chroma. (``y_input="rounded"`` rounds the upscaled RGB to uint8 first, as an 8-bit image pipeline would; it
  reads 0.03-0.1 dB lower.) Y-channel networks with their own upsampler get the LR luma; their output is
  recombined the same way.

:func:`upscale_image` tiles the LR image: each tile is run with ``overlap`` LR pixels of real context on every side
and only its centre is kept, so no seam is visible, and the output is written tile by tile into one preallocated
tensor (uint8 by default in the CLI) so that a 4K result never needs the network's activations for the whole image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from typing_extensions import TypedDict, Unpack

from srkd.data.images import check_output_pixels, quantize
from srkd.device import model_device, resolve_device
from srkd.errors import SrkdError
from srkd.models import model_scale, run_sr
from srkd.models.base import model_colour, upsamples_input
from srkd.models.taps import unwrap_model
from srkd.ops.color import rgb_to_ycbcr, ycbcr_to_rgb
from srkd.ops.imresize import imresize

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
Y_INPUTS: tuple[str, ...] = ("float", "rounded")


class Bicubic(nn.Module):
    """MATLAB bicubic upscaling dressed as a model, so the bicubic baseline runs through the same code as networks."""

    colour = "rgb"
    upsample_input = False

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=self.scale)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise SrkdError(f"unknown precision '{precision}' (use one of: {', '.join(PRECISIONS)})")


@contextlib.contextmanager
def inference_mode(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Eval mode, no autograd, on ``device``; the model's mode and device are restored afterwards.

    Restoring matters because the training engine validates the live student with this code.
    """
    was_training = model.training
    old_device = model_device(model)
    model.eval()
    if old_device != device:
        model.to(device)
    try:
        with torch.no_grad():
            yield model
    finally:
        if old_device != device:
            model.to(old_device)
        model.train(was_training)


def network_forward(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, precision: str
) -> torch.Tensor:
    """Run ``net`` in ``precision`` on a channels_last input; bf16 under autocast.

    channels_last in every precision: bf16 needs it for oneDNN's bf16 kernels, and in fp32 it is faster too (EDSR-64
    inference 15-33 % faster than NCHW on an AVX2-only 2-core CPU, same outputs within 4e-7; benchmarks/README.md).
    """
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = net(x)
    return out.float().contiguous()


Transform = Callable[[torch.Tensor], torch.Tensor]


def _transforms() -> list[tuple[Transform, Transform]]:
    """The 8 symmetries of the square (flips x transpose), each with its inverse."""
    pairs: list[tuple[Transform, Transform]] = []
    for transpose in (False, True):
        for flip_h in (False, True):
            for flip_v in (False, True):
                dims = [d for d, on in ((-1, flip_h), (-2, flip_v)) if on]

                def fwd(t: torch.Tensor, dims: list[int] = dims, tr: bool = transpose) -> torch.Tensor:
                    t = t.flip(dims) if dims else t
                    return t.transpose(-1, -2) if tr else t

                def inv(t: torch.Tensor, dims: list[int] = dims, tr: bool = transpose) -> torch.Tensor:
                    t = t.transpose(-1, -2) if tr else t
                    return t.flip(dims) if dims else t

                pairs.append((fwd, inv))
    return pairs


def ensemble_forward(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Self-ensemble (EDSR's "+"): the mean of the outputs for the 8 flipped/transposed inputs, mapped back."""
    total: torch.Tensor | None = None
    for fwd, inv in _transforms():
        out = inv(net(fwd(x)))
        total = out.clone() if total is None else total.add_(out)
    assert total is not None
    return total.div_(8.0)


@dataclass
class SRResult:
    rgb: torch.Tensor  # (N, 3, sH, sW) float, not clamped
    y: torch.Tensor | None  # (N, 1, sH, sW) float luma straight from a Y-channel network, else None


def super_resolve(
    model: nn.Module,
    lr: torch.Tensor,
    *,
    scale: int | None = None,
    precision: str = "fp32",
    self_ensemble: bool = False,
    y_input: str = "float",
) -> SRResult:
    """Super-resolve a float batch ``lr`` (N, 3, h, w) in [0, 1]; call under :func:`inference_mode`.

    ``scale`` only matters for pre-upsampling networks (VDSR serves every scale); for the others it is the model's.
    ``y_input`` (Y-channel pre-upsampling networks only): ``"float"`` feeds the luma of the float bicubic upscale,
    as the VDSR authors' test code does; ``"rounded"`` rounds the upscaled RGB to uint8 first.
    """
    if y_input not in Y_INPUTS:
        raise SrkdError(f"unknown y_input '{y_input}' (use one of: {', '.join(Y_INPUTS)})")
    net = unwrap_model(model)
    s = int(scale or model_scale(net))
    colour = model_colour(net)
    if colour == "y":
        lr_ycbcr = rgb_to_ycbcr(lr)
        if y_input == "rounded":  # the RGB upscale stored as uint8 first, as an 8-bit image pipeline would
            ycbcr = rgb_to_ycbcr(quantize(imresize(lr, scale=s)).float().div_(255.0))
        else:  # the VDSR authors' protocol: bicubic on the float YCbCr planes (the same as on float RGB)
            ycbcr = imresize(lr_ycbcr, scale=s)
        # VDSR-like nets refine the upscaled luma; a Y-channel EDSR/RCAN/SwinIR upscales the LR luma itself.
        y_in = ycbcr[:, :1] if upsamples_input(net) else lr_ycbcr[:, :1]

        def run(t: torch.Tensor) -> torch.Tensor:
            return network_forward(model, t, precision)

        y = ensemble_forward(run, y_in) if self_ensemble else run(y_in)
        rgb = ycbcr_to_rgb(torch.cat([y, ycbcr[:, 1:]], dim=1))
        return SRResult(rgb=rgb, y=y)

    if upsamples_input(net):

        def run(t: torch.Tensor) -> torch.Tensor:
            return network_forward(lambda u: run_sr(model, u, scale=s), t, precision)
    elif isinstance(net, Bicubic):

        def run(t: torch.Tensor) -> torch.Tensor:
            return model(t)  # bicubic is exact arithmetic: never in bf16
    else:

        def run(t: torch.Tensor) -> torch.Tensor:
            return network_forward(model, t, precision)

    rgb = ensemble_forward(run, lr) if self_ensemble else run(lr)
    return SRResult(rgb=rgb, y=None)


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split ``[0, length)`` into cores of at most ``tile`` pixels; each comes with its input window.

    Returns ``(core_start, core_end, in_start, in_end)``. The window holds the core plus at least ``overlap``
    pixels of context on each side where the image has them; all windows have the same length (border windows
    are shifted inwards rather than clipped), so every tile runs with one input shape and kernels are reused.
    Cores are balanced so the last tile is not a sliver.
    """
    if tile <= 0 or length <= tile:
        return [(0, length, 0, length)]
    n = -(-length // tile)
    bounds = [round(i * length / n) for i in range(n + 1)]
    window = min(length, max(b - a for a, b in zip(bounds[:-1], bounds[1:])) + 2 * overlap)
    spans = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        start = min(max(0, a - overlap), length - window)
        spans.append((a, b, start, start + window))
    return spans


class TileOptions(TypedDict, total=False):
    """The keyword arguments :func:`upscale_image` passes on to :func:`tiled_super_resolve` (see there)."""

    tile: int
    overlap: int
    precision: str
    device: str | torch.device | None
    scale: int | None
    self_ensemble: bool
    out_dtype: torch.dtype
    progress: Callable[[int, int], None] | None


def upscale_image(model: nn.Module, lr: torch.Tensor, **options: Unpack[TileOptions]) -> torch.Tensor:
    """Super-resolve one image ``lr`` (C, H, W) (float in [0, 1] or uint8) -> (3, sH, sW) on the CPU.

    ``tile`` is the core size in LR pixels (0 = whole image at once; default 256); ``overlap`` LR pixels of
    context (default 16) are added around each core and cropped away after the network, so tiles agree with the
    untiled result to far below one grey level. The result is ``out_dtype``: float32 clamped to [0, 1] (default),
    float16, or uint8 rounded as MATLAB does. ``progress(done, total)`` is called after each tile. The other
    options and their defaults are :func:`tiled_super_resolve`'s.
    """
    return tiled_super_resolve(model, lr, **options).rgb


def tiled_super_resolve(
    model: nn.Module,
    lr: torch.Tensor,
    *,
    tile: int = 256,
    overlap: int = 16,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    scale: int | None = None,
    self_ensemble: bool = False,
    out_dtype: torch.dtype = torch.float32,
    keep_y: bool = False,
    y_input: str = "float",
    progress: Callable[[int, int], None] | None = None,
) -> SRResult:
    """:func:`upscale_image` that can also keep a Y-channel network's own luma (``keep_y``), for evaluation.

    Returns an :class:`SRResult` of unbatched ``(3, sH, sW)`` / ``(1, sH, sW)`` tensors in ``out_dtype``.
    """
    check_precision(precision)
    if lr.dim() != 3:
        raise SrkdError(f"upscale_image expects one (C, H, W) image, got shape {tuple(lr.shape)}")
    if lr.dtype == torch.uint8:
        lr = lr.float().div_(255.0)
    if lr.shape[0] == 1:
        lr = lr.expand(3, -1, -1)
    if lr.shape[0] != 3:
        raise SrkdError(f"expected an RGB image (3 channels), got {lr.shape[0]} channels")
    if out_dtype not in (torch.float32, torch.float16, torch.uint8):
        raise ValueError(f"out_dtype must be float32, float16 or uint8, not {out_dtype}")
    net = unwrap_model(model)
    s = int(scale or model_scale(net))
    dev = resolve_device(device, model)
    _, h, w = lr.shape
    check_output_pixels(h * s, w * s, f"{w}x{h} x{s}")
    out = torch.empty(3, h * s, w * s, dtype=out_dtype)
    out_y = (
        torch.empty(1, h * s, w * s, dtype=out_dtype)
        if keep_y and model_colour(net) == "y"
        else None
    )
    rows, cols = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    total, done = len(rows) * len(cols), 0
    with inference_mode(model, dev):
        for y0, y1, iy0, iy1 in rows:
            for x0, x1, ix0, ix1 in cols:
                patch = lr[:, iy0:iy1, ix0:ix1].unsqueeze(0).to(dev)
                res = super_resolve(
                    model, patch, scale=s, precision=precision, self_ensemble=self_ensemble, y_input=y_input
                )
                core = (
                    slice(None),
                    slice((y0 - iy0) * s, (y1 - iy0) * s),
                    slice((x0 - ix0) * s, (x1 - ix0) * s),
                )
                dst = (slice(None), slice(y0 * s, y1 * s), slice(x0 * s, x1 * s))
                out[dst] = to_dtype(res.rgb[0][core].cpu(), out_dtype)
                if out_y is not None and res.y is not None:
                    out_y[dst] = to_dtype(res.y[0][core].cpu(), out_dtype)
                done += 1
                if progress is not None:
                    progress(done, total)
    return SRResult(rgb=out, y=out_y)


def to_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float SR output -> the stored form: uint8 (MATLAB rounding) or float clamped to [0, 1]."""
    if dtype == torch.uint8:
        return quantize(x)
    return x.clamp(0.0, 1.0).to(dtype)


__all__ = [
    "PRECISIONS",
    "Y_INPUTS",
    "Bicubic",
    "SRResult",
    "check_precision",
    "ensemble_forward",
    "inference_mode",
    "network_forward",
    "resolve_device",  # srkd.device's, the one rule every command uses
    "super_resolve",
    "tile_spans",
    "tiled_super_resolve",
    "upscale_image",
]
