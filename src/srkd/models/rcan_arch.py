"""RCAN (Zhang et al., ECCV 2018): residual groups of residual blocks with channel attention.

DUKD's teacher is 64 features / 10 groups / 20 blocks (15.59M at x4), its student keeps 10 groups of 6 blocks
(5.17M). ``body`` is the sequence of residual groups, so ``body.<i>`` taps are group outputs.

Keys follow BasicSR's ``RCAN`` with the same three prefix renames as EDSR
(``conv_first.`` -> ``head.``, ``upsample.`` -> ``tail.upsample.``, ``conv_last.`` -> ``tail.conv_last.``).
The official RCAN (EDSR-PyTorch style) layout maps as ``body.<g>.body.<b>.body.{0,2}`` ->
``body.<g>.residual_group.<b>.rcab.{0,2}``, ``...body.3.conv_du.{0,2}`` -> ``...rcab.3.attention.{1,3}``,
``body.<g>.body.<n_resblocks>`` -> ``body.<g>.conv``, ``body.<n_resgroups>`` -> ``conv_after_body``, and the
head/tail renames given for EDSR-PyTorch in :mod:`srkd.models.edsr_arch`. Naming the group's last conv ``conv``
(not an index) is what lets a student with fewer blocks per group load a teacher's weights with strict=False.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from srkd.errors import SrkdError
from srkd.models.blocks import DIV2K_RGB_MEAN, MeanShift, fp32_stream, make_tail, zero_conv_
from srkd.models.edsr_arch import BASICSR_ENDS, OFFICIAL_ENDS
from srkd.models.layout import Layout, count_keys, mean_from_shift, upsampler_scale
from srkd.models.taps import standard_taps


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average -> bottleneck (``n_feats // reduction``) -> per-channel gate."""

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(n_feats, n_feats // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats // reduction, n_feats, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    def __init__(self, n_feats: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.rcab = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats, n_feats, 3, 1, 1),
            ChannelAttention(n_feats, reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.rcab(x) * self.res_scale


class ResidualGroup(nn.Module):
    def __init__(self, n_feats: int, n_resblocks: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(
            *(RCAB(n_feats, reduction, res_scale) for _ in range(n_resblocks))
        )
        self.conv = nn.Conv2d(n_feats, n_feats, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.residual_group(x))

    def identity_(self) -> None:
        """Make the group the identity map (zero its closing conv): function-preserving progressive growth."""
        zero_conv_(self.conv)


class RCAN(nn.Module):
    upsample_input = False

    def __init__(
        self,
        scale: int = 4,
        n_feats: int = 64,
        n_resgroups: int = 10,
        n_resblocks: int = 20,
        reduction: int = 16,
        res_scale: float = 1.0,
        in_channels: int = 3,
        img_range: float = 255.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        if n_feats // reduction < 1:
            raise SrkdError(
                f"rcan: reduction {reduction} leaves no channels in the attention of {n_feats} features"
            )
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "rgb" if in_channels == 3 else "y"
        self.shift = MeanShift(in_channels, img_range, rgb_mean)
        self.head = nn.Conv2d(in_channels, n_feats, 3, 1, 1)
        self.body = nn.Sequential(
            *(ResidualGroup(n_feats, n_resblocks, reduction, res_scale) for _ in range(n_resgroups))
        )
        self.conv_after_body = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.tail = make_tail(self.scale, n_feats, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fp32_stream(self.head(self.shift.normalize(x)))  # residual stream in fp32 under autocast
        x = x + self.conv_after_body(self.body(x))
        return self.shift.denormalize(fp32_stream(self.tail(x)))

    def feature_taps(self) -> dict[str, str]:
        return standard_taps(self.body, body_out="conv_after_body")


def _infer(state: dict[str, torch.Tensor], head: str, up: str, official: bool) -> tuple[dict[str, Any], list[str]]:
    first = state[f"{head}.weight"]
    n_feats = int(first.shape[0])
    if official:
        groups, blocks = r"body\.\d+\.body\.0\.body\.0\.weight", r"body\.0\.body\.\d+\.body\.0\.weight"
        squeeze = state["body.0.body.0.body.3.conv_du.0.weight"]
    else:
        groups, blocks = r"body\.\d+\.residual_group\.0\.rcab\.0\.weight", r"body\.0\.residual_group\.\d+\.rcab\.0\.weight"
        squeeze = state["body.0.residual_group.0.rcab.3.attention.1.weight"]
    kwargs: dict[str, Any] = {
        "scale": upsampler_scale(state, up, n_feats),
        "n_feats": n_feats,
        "n_resgroups": count_keys(state, groups),
        "n_resblocks": count_keys(state, blocks),
        "reduction": n_feats // int(squeeze.shape[0]),
        "in_channels": int(first.shape[1]),
    }
    mean = mean_from_shift(state)
    if mean is not None:
        kwargs["rgb_mean"] = mean
    return kwargs, []


LAYOUTS = (
    Layout(
        "rcan", "rcan", r"body\.0\.body\.0\.body\.3\.conv_du\.0\.weight",
        lambda s: _infer(s, "head.0", "tail.0.", official=True),
        (*OFFICIAL_ENDS,
         (r"body\.(\d+)\.body\.(\d+)\.body\.([02])\.(.*)", r"body.\1.residual_group.\2.rcab.\3.\4"),
         (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.0\.(.*)", r"body.\1.residual_group.\2.rcab.3.attention.1.\3"),
         (r"body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.2\.(.*)", r"body.\1.residual_group.\2.rcab.3.attention.3.\3"),
         (r"body\.(\d+)\.body\.\d+\.(weight|bias)", r"body.\1.conv.\2"),
         (r"body\.\d+\.(weight|bias)", r"conv_after_body.\1")),
    ),
    Layout(
        "basicsr", "rcan", r"body\.0\.residual_group\.0\.rcab\.0\.weight",
        lambda s: _infer(s, "conv_first", "upsample.", official=False),
        BASICSR_ENDS,
    ),
)
