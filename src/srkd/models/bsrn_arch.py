"""BSRN, Blueprint Separable Residual Network (Li et al., CVPRW 2022; NTIRE 2022 efficient SR, model complexity
track winner): eight distillation blocks (ESDB) built from blueprint-separable convolutions (1x1 then depthwise
3x3), each closed by enhanced spatial attention (ESA) and contrast-aware channel attention (CCA).

Published size: ``num_feat=64, num_block=8`` with a one-conv pixel-shuffle upsampler (331,628 / 340,283 / 352,400
parameters at x2 / x3 / x4). ``img_range`` is 1.0: the authors' BasicSR model feeds [0, 1] images with no mean
shift. The network repeats the input image 4 times along channels before ``fea_conv`` (the published forward does
so; ``fea_conv.pw`` therefore has ``4 * in_channels`` inputs).

Keys are exactly those of the authors' checkpoints (``{'params': ...}``)::

    fea_conv.{pw,dw}.   B<i>.{c1_d,c1_r,c2_d,c2_r,c3_d,c3_r,c4,c5,esa.*,cca.conv_du.*}   c1.   c2.{pw,dw}.
    upsampler.upsampleOneStep.0.

so the blocks are attributes ``B1`` ... ``B<num_block>`` rather than a ``body`` sequence; :meth:`BSRN.feature_taps`
maps the standard tap names onto them (``head`` -> ``fea_conv``, ``body.<i>`` -> ``B<i+1>``, ``body`` -> ``c2``,
the conv that fuses the concatenated block outputs).

Small inputs: ESA's coarse branch is a stride-2 valid 3x3 conv followed by a 7x7 / stride-3 max-pool, which needs
at least 15 px on each side; the published code raises for smaller inputs. Here, and only then, ESA pads its
reduced features (bottom/right, ``replicate``) to 15 px before that branch and crops the upsampled attention map
back, so inputs of any size >= 1 px work (e.g. DUKD's 12x12 zoom-out patches). Replicate because it works for
every size (reflect needs the pad to be smaller than the side) and because repeating edge values adds nothing
new to the max-pool it feeds. Every other layer sees the true image, and inputs of 15 px or more compute exactly
the published function. Padding only there beats padding the whole image: on 30 random 12x12 crops of Set5's x4
LR images the published x4 weights give 30.62 dB against the HR crops this way, 29.51 / 29.56 dB with the image
replicate / reflect padded to 15 px (the same crops cut from the full-image output: 31.46 dB). Traced graphs
(ONNX) carry the pad with amounts computed from the input shape, so one dynamic export serves every size.

One deliberate deviation: CCA floors the variance at 1e-12 before the square root (see :class:`srkd.models.blocks.ContrastChannelAttention`); it
changes nothing measurable (Set5 PSNR 38.099 / 34.460 / 32.351 dB at x2 / x3 / x4, the published figures to
0.001 dB) and keeps gradients finite.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.errors import SrkdError
from srkd.models.blocks import ContrastChannelAttention, fp32_stream, zero_conv_
from srkd.models.layout import published_layout

LAYOUT_MARKER = r"fea_conv\.pw\.weight"  # blueprint-separable first conv: RFDN/IMDN have a plain fea_conv.weight
MULTI_SCALE = False
DROPPED_KEYS: str | None = None

ESA_MIN_SIZE = 15  # smallest side for ESA's valid stride-2 conv + 7x7/3 max-pool to produce one pixel


def _shortfall(n: int) -> int:
    """Pixels missing from ``n`` to ESA_MIN_SIZE. Arithmetic only (no ``max``/``if``), so that under ONNX
    tracing, where ``n`` is a traced size, the result stays tied to the input shape instead of a constant."""
    return (ESA_MIN_SIZE - n) * (n < ESA_MIN_SIZE)


class BSConvU(nn.Module):
    """Blueprint-separable conv: 1x1 across channels (no bias), then a depthwise spatial conv (with bias)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.dw = nn.Conv2d(cout, cout, 3, stride, padding, groups=cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


class ESA(nn.Module):
    """Enhanced spatial attention: a sigmoid mask from a strided, max-pooled coarse branch plus a 1x1 branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        f = channels // 4
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = BSConvU(f, f)
        self.conv2 = BSConvU(f, f, stride=2, padding=0)
        self.conv3 = BSConvU(f, f)
        self.conv3_ = BSConvU(f, f)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def coarse(self, c1: torch.Tensor) -> torch.Tensor:
        """The low-resolution branch, bilinearly resized back to ``c1``'s size (padded first when too small)."""
        h, w = c1.shape[-2:]
        ph, pw = _shortfall(h), _shortfall(w)
        # A traced graph (ONNX) always carries the pad, with amounts computed from the input shape, so one export
        # serves every size; eager mode skips it when nothing is missing.
        padded = torch.jit.is_tracing() or ph > 0 or pw > 0
        if padded:
            c1 = F.pad(c1, (0, pw, 0, ph), mode="replicate")
        y = F.max_pool2d(self.conv2(c1), kernel_size=7, stride=3)
        y = F.gelu(self.conv_max(y))
        y = self.conv3_(F.gelu(self.conv3(y)))
        y = F.interpolate(y, size=c1.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w] if padded else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        return x * torch.sigmoid(self.conv4(self.coarse(c1) + self.conv_f(c1)))


class ESDB(nn.Module):
    """Efficient separable distillation block: three (distil 1x1, refine BSConv + skip) steps, a last BSConv,
    concat of the four distilled parts, 1x1 fuse, ESA, CCA, and a skip over the whole block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        dc = channels // 2
        self.c1_d = nn.Conv2d(channels, dc, 1)
        self.c1_r = BSConvU(channels, channels)
        self.c2_d = nn.Conv2d(channels, dc, 1)
        self.c2_r = BSConvU(channels, channels)
        self.c3_d = nn.Conv2d(channels, dc, 1)
        self.c3_r = BSConvU(channels, channels)
        self.c4 = BSConvU(channels, dc)
        self.act = nn.GELU()
        self.c5 = nn.Conv2d(4 * dc, channels, 1)
        self.esa = ESA(channels)
        self.cca = ContrastChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.act
        d1, r1 = act(self.c1_d(x)), act(self.c1_r(x) + x)
        d2, r2 = act(self.c2_d(r1)), act(self.c2_r(r1) + r1)
        d3, r3 = act(self.c3_d(r2)), act(self.c3_r(r2) + r2)
        out = self.c5(torch.cat([d1, d2, d3, act(self.c4(r3))], dim=1))
        return self.cca(self.esa(out)) + x

    def identity_(self) -> None:
        """Zero the fuse conv: ESA and CCA then multiply zeros, so the block returns its input."""
        zero_conv_(self.c5)


class PixelShuffleDirect(nn.Module):
    """One 3x3 conv to ``C * scale**2`` channels and a pixel shuffle (the published ``pixelshuffledirect``)."""

    def __init__(self, scale: int, num_feat: int, out_channels: int) -> None:
        super().__init__()
        self.upsampleOneStep = nn.Sequential(
            nn.Conv2d(num_feat, out_channels * scale * scale, 3, 1, 1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsampleOneStep(x)


def _check_sizes(scale: int, num_feat: int, num_block: int, in_channels: int) -> None:
    if int(scale) != scale or not 2 <= scale <= 8:
        raise SrkdError(f"bsrn: unsupported scale {scale} (the pixel-shuffle upsampler supports 2 ... 8)")
    if num_feat < 16:
        raise SrkdError(f"bsrn: num_feat must be >= 16 (CCA squeezes channels by 16), got {num_feat}")
    if num_block < 1:
        raise SrkdError(f"bsrn: num_block must be >= 1, got {num_block}")
    if in_channels < 1:
        raise SrkdError(f"bsrn: in_channels must be >= 1, got {in_channels}")


class BSRN(nn.Module):
    upsample_input = False

    def __init__(
        self,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 8,
        in_channels: int = 3,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        _check_sizes(scale, num_feat, num_block, in_channels)
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "rgb" if in_channels == 3 else "y"
        self.img_range = float(img_range)
        self.num_block = num_block
        self.fea_conv = BSConvU(4 * in_channels, num_feat)
        for i in range(1, num_block + 1):
            self.add_module(f"B{i}", ESDB(num_feat))
        self.c1 = nn.Conv2d(num_feat * num_block, num_feat, 1)
        self.GELU = nn.GELU()
        self.c2 = BSConvU(num_feat, num_feat)
        self.upsampler = PixelShuffleDirect(self.scale, num_feat, in_channels)

    def blocks(self) -> list[ESDB]:
        return [getattr(self, f"B{i}") for i in range(1, self.num_block + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.img_range != 1.0:
            x = x * self.img_range
        head = fp32_stream(self.fea_conv(x.repeat(1, 4, 1, 1)))  # residual stream in fp32 under autocast
        feats, y = [], head
        for block in self.blocks():
            y = block(y)
            feats.append(y)
        body = self.c2(self.GELU(self.c1(torch.cat(feats, dim=1))))
        out = fp32_stream(self.upsampler(body + head))
        return out / self.img_range if self.img_range != 1.0 else out

    def feature_taps(self) -> dict[str, str]:
        taps = {"head": "fea_conv"}
        taps.update({f"body.{i}": f"B{i + 1}" for i in range(self.num_block)})
        taps["body"] = "c2"
        return taps


def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor kwargs from an (unwrapped) BSRN state dict: widths and channels from ``fea_conv.pw``, the block
    count from the ``B<i>.c5`` keys, the scale from the upsampler's output channels (``C * scale**2``)."""
    try:
        pw = state["fea_conv.pw.weight"]
        up = state["upsampler.upsampleOneStep.0.weight"]
    except KeyError as exc:
        raise ValueError(f"bsrn: state dict has no {exc} key") from None
    num_feat, cin4 = int(pw.shape[0]), int(pw.shape[1])
    if cin4 % 4:
        raise ValueError(f"bsrn: fea_conv.pw takes {cin4} channels, not 4x the image channels")
    in_channels = cin4 // 4
    ids = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"B(\d+)\.c5\.weight", k)))
    if not ids or ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"bsrn: blocks must be B1 ... B<n> without gaps, found {ids}")
    scale = math.isqrt(int(up.shape[0]) // in_channels)
    if in_channels * scale * scale != up.shape[0]:
        raise ValueError(f"bsrn: upsampler has {up.shape[0]} outputs, not {in_channels} x scale^2")
    return {"scale": scale, "num_feat": num_feat, "num_block": len(ids), "in_channels": in_channels}

LAYOUTS = (
    published_layout("bsrn", LAYOUT_MARKER, infer_kwargs, dropped=DROPPED_KEYS, multi_scale=MULTI_SCALE),
)
