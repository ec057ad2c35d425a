"""EDSR (Lim et al., CVPRW 2017): BN-free residual blocks, a conv after the body, pixel-shuffle upsampling.

Sizes used by the papers: 256 features / 32 blocks / ``res_scale=0.1`` (43.09M at x4, DUKD's teacher) and
64 / 32 (2.70M, its student); 64 / 16 is EDSR-baseline. The input is shifted by the DIV2K RGB mean and scaled
to ``img_range`` inside the network, so it takes and returns [0, 1] images like every srkd model.

Keys follow BasicSR's ``EDSR`` except for the head/tail names the srkd contract fixes (prefix renames)::

    conv_first. -> head.     upsample. -> tail.upsample.     conv_last. -> tail.conv_last.

EDSR-PyTorch (``.pt``) keys: ``head.0.`` -> ``head.``, ``body.<i>.body.0/2.`` -> ``body.<i>.conv1/conv2.``,
``body.<n_resblocks>.`` -> ``conv_after_body.``, ``tail.0.`` -> ``tail.upsample.``, ``tail.1.`` -> ``tail.conv_last.``
(its ``sub_mean``/``add_mean`` are fixed and dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from srkd.models.blocks import DIV2K_RGB_MEAN, MeanShift, fp32_stream, make_tail, zero_conv_
from srkd.models.layout import Layout, Rule, count_keys, mean_from_shift, upsampler_scale
from srkd.models.taps import standard_taps


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale

    def identity_(self) -> None:
        """Make the block the identity map (zero residual branch): function-preserving progressive growth."""
        zero_conv_(self.conv2)


class EDSR(nn.Module):
    upsample_input = False

    def __init__(
        self,
        scale: int = 4,
        n_feats: int = 64,
        n_resblocks: int = 16,
        res_scale: float = 1.0,
        in_channels: int = 3,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "rgb" if in_channels == 3 else "y"
        self.shift = MeanShift(in_channels, img_range, rgb_mean)
        self.head = nn.Conv2d(in_channels, n_feats, 3, 1, 1)
        self.body = nn.Sequential(*(ResBlock(n_feats, res_scale) for _ in range(n_resblocks)))
        self.conv_after_body = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.tail = make_tail(self.scale, n_feats, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fp32_stream(self.head(self.shift.normalize(x)))
        x = x + self.conv_after_body(self.body(x))
        return self.shift.denormalize(fp32_stream(self.tail(x)))

    def feature_taps(self) -> dict[str, str]:
        return standard_taps(self.body, body_out="conv_after_body")


def _res_scale(n_feats: int, notes: list[str]) -> float:
    # Not stored in the weights. The EDSR paper uses 0.1 for its 256-feature model and 1 for the baseline.
    res_scale = 0.1 if n_feats >= 256 else 1.0
    notes.append(f"res_scale={res_scale} assumed (not stored in the weights; override with --set res_scale=...)")
    return res_scale


def _infer(state: dict[str, torch.Tensor], head: str, up: str, block: str) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    first = state[f"{head}.weight"]
    n_feats = int(first.shape[0])
    kwargs: dict[str, Any] = {
        "scale": upsampler_scale(state, up, n_feats),
        "n_feats": n_feats,
        "n_resblocks": count_keys(state, block),
        "res_scale": _res_scale(n_feats, notes),
        "in_channels": int(first.shape[1]),
    }
    mean = mean_from_shift(state)
    if mean is not None:
        kwargs["rgb_mean"] = mean
    return kwargs, notes


# Shared with RCAN, whose official and BasicSR releases name their ends the same way.
DROP_MEANS: tuple[Rule, ...] = ((r"(sub|add)_mean\.(weight|bias)", None),)
BASICSR_ENDS: tuple[Rule, ...] = (
    (r"conv_first\.(.*)", r"head.\1"),
    (r"upsample\.(.*)", r"tail.upsample.\1"),
    (r"conv_last\.(.*)", r"tail.conv_last.\1"),
)
OFFICIAL_ENDS: tuple[Rule, ...] = (
    (r"head\.0\.(.*)", r"head.\1"),
    (r"tail\.0\.(.*)", r"tail.upsample.\1"),
    (r"tail\.1\.(.*)", r"tail.conv_last.\1"),
    *DROP_MEANS,
)

LAYOUTS = (
    Layout(
        "edsr", "edsr", r"body\.0\.body\.0\.weight",
        lambda s: _infer(s, "head.0", "tail.0.", r"body\.\d+\.body\.0\.weight"),
        (*OFFICIAL_ENDS,
         (r"body\.(\d+)\.body\.0\.(.*)", r"body.\1.conv1.\2"),
         (r"body\.(\d+)\.body\.2\.(.*)", r"body.\1.conv2.\2"),
         (r"body\.\d+\.(weight|bias)", r"conv_after_body.\1")),
    ),
    Layout(
        "basicsr", "edsr", r"body\.0\.conv1\.weight",
        lambda s: _infer(s, "conv_first", "upsample.", r"body\.\d+\.conv1\.weight"),
        BASICSR_ENDS,
    ),
)
