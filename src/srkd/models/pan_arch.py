"""PAN (Zhao et al., ECCV-W 2020, "Efficient Image Super-Resolution Using Pixel Attention").

A shallow conv, 16 SCPA blocks (self-calibrated convolution with a pixel-attention branch) and a 3x3 conv after
them, added to the shallow features; then upsampling by nearest-neighbour interpolation followed by
conv -> pixel attention -> conv (once for x2/x3 with the whole factor, twice with factor 2 for x4), a last conv,
and a bilinear upscale of the input added to the result. 40 features / 24 upsampling features / 16 blocks:
261,403 parameters at x2 and x3, 272,419 at x4.

Parameter names are the published ones (``conv_first``, ``SCPA_trunk.<i>``, ``trunk_conv``, ``upconv1``,
``att1``, ``HRconv1``, x4 adds ``upconv2``/``att2``/``HRconv2``, ``conv_last``), so the authors' legacy state
dicts load strictly with no renaming. The published code works on [0, 1] images (``img_range=1``).

The x2 and x3 checkpoints have the same tensor shapes: the factor only appears in the interpolation, so
:func:`infer_kwargs` cannot read it and leaves ``scale`` out for them (the caller must give it).

Every size of input works, 1x1 included: there is no downsampling, and the published code pads nothing.
The interpolation modes follow the published forward exactly (``nearest`` for the features, ``bilinear`` with
``align_corners=False`` for the input); both export to ONNX ``Resize`` with the same coordinate rules
(asymmetric/floor and half_pixel), so ONNX Runtime reproduces them.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.errors import SrkdError
from srkd.models.blocks import fp32_stream, zero_conv_
from srkd.models.layout import published_layout

LAYOUT_MARKER = r"SCPA_trunk\.\d+\.PAConv\.k2\.weight"
MULTI_SCALE = False
DROPPED_KEYS: str | None = None

SCALES = (2, 3, 4)
_NEGATIVE_SLOPE = 0.2


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    # Not in place (the published code is): a forward hook on a conv then records its real output, not the
    # activation that would overwrite it, and FAKD taps stay valid for backward.
    return F.leaky_relu(x, _NEGATIVE_SLOPE)


class PA(nn.Module):
    """Pixel attention: a 1x1 conv and a sigmoid give one gate per pixel *and* channel (not per channel as in
    channel attention), which is what lets PAN stay this small. Key: ``att<n>.conv``."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_feat, num_feat, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """A 3x3 conv gated by a pixel-attention map computed from its input (1x1 conv ``k2`` + sigmoid), then a
    second 3x3 conv. Gate and conv see the same input, unlike :class:`PA` which gates its own input."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(num_feat, num_feat, 1)
        self.k3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False)
        self.k4 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention: the features split into two half-width branches (1x1 convs),
    a plain 3x3 conv on one and :class:`PAConv` on the other, concatenated, fused by a 1x1 conv and added to
    the input. All its convs except the attention gate have no bias, as published."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        half = num_feat // 2
        self.conv1_a = nn.Conv2d(num_feat, half, 1, bias=False)
        self.conv1_b = nn.Conv2d(num_feat, half, 1, bias=False)
        # A one-conv Sequential only because the published key is ``k1.0.weight``.
        self.k1 = nn.Sequential(nn.Conv2d(half, half, 3, 1, 1, bias=False))
        self.PAConv = PAConv(half)
        self.conv3 = nn.Conv2d(2 * half, num_feat, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = _lrelu(self.k1(_lrelu(self.conv1_a(x))))
        b = _lrelu(self.PAConv(_lrelu(self.conv1_b(x))))
        return x + self.conv3(torch.cat([a, b], dim=1))

    def identity_(self) -> None:
        """Make the block the identity map (zero fusion conv): function-preserving progressive growth."""
        zero_conv_(self.conv3)


def _check_sizes(scale: int, num_feat: int, num_up_feat: int, num_block: int, in_channels: int,
                 img_range: float) -> None:
    if scale not in SCALES:
        raise SrkdError(f"pan: unsupported scale {scale} (the published upsampler supports 2, 3, 4)")
    if num_feat < 2 or num_feat % 2:
        raise SrkdError(f"pan: num_feat must be even and >= 2 (SCPA splits it in two halves), got {num_feat}")
    if num_up_feat < 1 or num_block < 1 or in_channels < 1:
        raise SrkdError(
            f"pan: num_up_feat, num_block and in_channels must be >= 1, got {num_up_feat}, {num_block}, "
            f"{in_channels}"
        )
    if not img_range > 0:
        raise SrkdError(f"pan: img_range must be > 0, got {img_range}")


class PAN(nn.Module):
    """PAN. ``scale`` defaults to 2, not the published 4, so that the kwargs :func:`infer_kwargs` returns for
    the x2/x3 checkpoints (which say nothing about the factor) still build a model their weights load into."""

    upsample_input = False

    def __init__(
        self,
        scale: int = 2,
        num_feat: int = 40,
        num_up_feat: int = 24,
        num_block: int = 16,
        in_channels: int = 3,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        _check_sizes(int(scale), num_feat, num_up_feat, num_block, in_channels, img_range)
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "y" if in_channels == 1 else "rgb"
        self.img_range = float(img_range)
        self.conv_first = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.SCPA_trunk = nn.Sequential(*(SCPA(num_feat) for _ in range(num_block)))
        self.trunk_conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.upconv1 = nn.Conv2d(num_feat, num_up_feat, 3, 1, 1)
        self.att1 = PA(num_up_feat)
        self.HRconv1 = nn.Conv2d(num_up_feat, num_up_feat, 3, 1, 1)
        if self.scale == 4:
            self.upconv2 = nn.Conv2d(num_up_feat, num_up_feat, 3, 1, 1)
            self.att2 = PA(num_up_feat)
            self.HRconv2 = nn.Conv2d(num_up_feat, num_up_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_up_feat, in_channels, 3, 1, 1)

    def _upsample(self, fea: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour resize, conv, pixel attention, conv: by the whole factor at x2/x3, by 2 twice at x4."""
        factor = 2 if self.scale == 4 else self.scale
        fea = self.upconv1(F.interpolate(fea, scale_factor=factor, mode="nearest"))
        fea = _lrelu(self.HRconv1(_lrelu(self.att1(fea))))
        if self.scale == 4:
            fea = self.upconv2(F.interpolate(fea, scale_factor=2, mode="nearest"))
            fea = _lrelu(self.HRconv2(_lrelu(self.att2(fea))))
        return fea

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.img_range != 1.0:
            x = x * self.img_range
        fea = fp32_stream(self.conv_first(x))
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        out = fp32_stream(self.conv_last(self._upsample(fea)))
        out = out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out / self.img_range if self.img_range != 1.0 else out

    def feature_taps(self) -> dict[str, str]:
        taps = {"head": "conv_first"}
        taps.update({f"body.{i}": f"SCPA_trunk.{i}" for i in range(len(self.SCPA_trunk))})
        taps["body"] = "trunk_conv"
        return taps


def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Widths and block count from the shapes; ``scale`` only when the upsampler shows it (x4 has a second
    stage). x2 and x3 weights have identical shapes, so for them ``scale`` is left out and must be given."""
    first = state["conv_first.weight"]
    blocks = {int(m.group(1)) for k in state if (m := re.fullmatch(r"SCPA_trunk\.(\d+)\..+", k))}
    if not blocks:
        raise ValueError("no SCPA_trunk.<i> blocks")
    kwargs: dict[str, Any] = {
        "num_feat": int(first.shape[0]),
        "num_up_feat": int(state["upconv1.weight"].shape[0]),
        "num_block": max(blocks) + 1,
        "in_channels": int(first.shape[1]),
    }
    if "upconv2.weight" in state:
        kwargs["scale"] = 4
    return kwargs



LAYOUTS = (
    published_layout("pan", LAYOUT_MARKER, infer_kwargs, dropped=DROPPED_KEYS, multi_scale=MULTI_SCALE),
)

__all__ = ["DROPPED_KEYS", "LAYOUT_MARKER", "MULTI_SCALE", "PAN", "infer_kwargs", "LAYOUTS"]
