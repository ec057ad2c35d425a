"""IMDN (Hui et al., ACM MM 2019; AIM 2019 constrained-SR winner): information multi-distillation blocks.

Each block (IMDB) runs three 3x3 convs that each split off a quarter of their channels ("distilled") and pass
the rest on, a fourth conv that produces the last quarter, contrast-aware channel attention (CCA: per-channel
std + mean -> 1x1 squeeze/excite) over the concatenated quarters, and a 1x1 fusion with the block's input added
back. The outputs of all blocks are concatenated, fused by a 1x1 conv + LeakyReLU (``c``), passed through a 3x3
conv (``LR_conv``), added to the head features and upsampled by one conv + pixel shuffle.

Published sizes (Zheng222/IMDN, ``checkpoints/IMDN_x{2,3,4}.pth``): 64 features, 6 blocks, CCA reduction 16;
694,404 / 703,059 / 715,176 parameters at x2 / x3 / x4. The published network takes [0, 1] RGB, so
``img_range`` defaults to 1. Keys are the official ones once the DataParallel ``module.`` prefix is removed
(``fea_conv``, ``IMDB<k>.c1..c5``, ``IMDB<k>.cca.conv_du.{0,2}``, ``c.0``, ``LR_conv``, ``upsampler.0``).

Every layer is size-preserving and CCA pools globally, so any input size (down to 1x1) works, as it does in the
official code. One numerical change: CCA's standard deviation is ``sqrt(max(var, 1e-12))`` in fp32 instead
of ``sqrt(var)``. The official square root has an infinite derivative where a channel is constant over the image
(any 1x1 input, flat patches, dead channels), which turns a student's gradients into NaN; the epsilon moves the
output by at most 1e-6 and the Set5 PSNR not at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from srkd.errors import SrkdError
from srkd.models.blocks import ContrastChannelAttention, fp32_stream
from srkd.models.layout import published_layout

LAYOUT_MARKER = r"(?:module\.)?IMDB\d+\.c1\.weight"
MULTI_SCALE = False
DROPPED_KEYS: str | None = None

SUPPORTED_SCALES = (2, 3, 4, 8)
LRELU_SLOPE = 0.05  # the official activation('lrelu') default


def conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2)


class IMDB(nn.Module):
    """Information multi-distillation block (the official ``IMDModule``, distillation rate 1/4)."""

    def __init__(self, num_feat: int, reduction: int) -> None:
        super().__init__()
        self.distilled = num_feat // 4
        self.remaining = num_feat - self.distilled
        self.c1 = conv(num_feat, num_feat, 3)
        self.c2 = conv(self.remaining, num_feat, 3)
        self.c3 = conv(self.remaining, num_feat, 3)
        self.c4 = conv(self.remaining, self.distilled, 3)
        self.act = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        self.c5 = conv(num_feat, num_feat, 1)
        self.cca = ContrastChannelAttention(self.distilled * 4, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = [self.distilled, self.remaining]
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        out = torch.cat([d1, d2, d3, self.c4(r3)], dim=1)
        return self.c5(self.cca(out)) + x


def _check_sizes(scale: int, num_feat: int, num_block: int, reduction: int, in_channels: int) -> None:
    if scale not in SUPPORTED_SCALES:
        raise SrkdError(f"IMDN: unsupported scale {scale} (supported: {', '.join(map(str, SUPPORTED_SCALES))})")
    if num_feat < 4 or num_feat % 4:
        raise SrkdError(f"IMDN: num_feat must be a positive multiple of 4 (four distilled quarters), got {num_feat}")
    if reduction < 1 or num_feat // reduction < 1:
        raise SrkdError(f"IMDN: CCA reduction {reduction} leaves no channels at num_feat={num_feat}")
    if num_block < 1:
        raise SrkdError(f"IMDN: num_block must be >= 1, got {num_block}")
    if in_channels < 1:
        raise SrkdError(f"IMDN: in_channels must be >= 1, got {in_channels}")


class DistillationTrunk(nn.Module):
    """The trunk IMDN introduced and RFDN kept: head conv, blocks named ``<prefix>1..n`` at the top level (as in
    both releases), their outputs concatenated and fused (1x1 + LeakyReLU ``c``, 3x3 ``LR_conv``), the head's
    features added back, one conv + pixel shuffle. Subclasses only choose the block and its name."""

    upsample_input = False
    block_prefix = ""

    def _build(self, scale: int, num_feat: int, num_block: int, in_channels: int, img_range: float,
               make_block: Callable[[], nn.Module]) -> None:
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "rgb" if in_channels == 3 else "y"
        self.img_range = float(img_range)
        self.num_block = num_block
        self.fea_conv = conv(in_channels, num_feat, 3)
        for k in range(1, num_block + 1):
            self.add_module(f"{self.block_prefix}{k}", make_block())
        self.c = nn.Sequential(nn.Conv2d(num_feat * num_block, num_feat, 1), nn.LeakyReLU(LRELU_SLOPE, True))
        self.LR_conv = conv(num_feat, num_feat, 3)
        self.upsampler = nn.Sequential(
            conv(num_feat, in_channels * self.scale**2, 3), nn.PixelShuffle(self.scale)
        )

    def blocks(self) -> list[nn.Module]:
        return [self.get_submodule(f"{self.block_prefix}{k}") for k in range(1, self.num_block + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = fp32_stream(self.fea_conv(x * self.img_range))
        outs: list[torch.Tensor] = []
        h = fea
        for block in self.blocks():
            h = block(h)
            outs.append(h)
        h = self.LR_conv(self.c(torch.cat(outs, dim=1))) + fea
        return fp32_stream(self.upsampler(h)) / self.img_range

    def feature_taps(self) -> dict[str, str]:
        taps = {"head": "fea_conv"}
        taps.update({f"body.{i}": f"{self.block_prefix}{i + 1}" for i in range(self.num_block)})
        taps["body"] = "LR_conv"
        return taps


def scale_from_upsampler(arch: str, out_ch: int, in_channels: int) -> int:
    scale = round((out_ch / in_channels) ** 0.5)
    if scale * scale * in_channels != out_ch:
        raise ValueError(f"{arch}: upsampler has {out_ch} channels, not in_channels * scale^2")
    return scale


class IMDN(DistillationTrunk):
    """IMDN; ``forward`` maps [0, 1] images to [0, 1] images (unclamped), ``scale`` times larger."""

    block_prefix = "IMDB"  # top-level IMDB1..IMDBn, as in the checkpoints

    def __init__(
        self,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 6,
        reduction: int = 16,
        in_channels: int = 3,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        _check_sizes(int(scale), num_feat, num_block, reduction, in_channels)
        self._build(scale, num_feat, num_block, in_channels, img_range, lambda: IMDB(num_feat, reduction))


def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor kwargs of the IMDN that ``state`` (``module.`` prefix removed) belongs to."""
    try:
        num_feat, in_channels = state["fea_conv.weight"].shape[:2]
        up_ch = state["upsampler.0.weight"].shape[0]
        squeezed = state["IMDB1.cca.conv_du.0.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"not an IMDN state dict: missing {err}") from None
    num_block = sum(1 for key in state if re.fullmatch(r"IMDB\d+\.c1\.weight", key))
    if state["c.0.weight"].shape[1] != num_feat * num_block:
        raise ValueError(f"IMDN: fusion conv expects {state['c.0.weight'].shape[1]} channels, not {num_block} blocks")
    return dict(
        scale=scale_from_upsampler("IMDN", int(up_ch), int(in_channels)),
        num_feat=int(num_feat),
        num_block=num_block,
        reduction=int(num_feat) // int(squeezed),
        in_channels=int(in_channels),
        img_range=1.0,
    )

LAYOUTS = (
    published_layout("imdn", LAYOUT_MARKER, infer_kwargs, dropped=DROPPED_KEYS, multi_scale=MULTI_SCALE),
)
