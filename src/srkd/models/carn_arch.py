"""CARN-M (Ahn et al., ECCV 2018): the mobile Cascading Residual Network, one network for x2, x3 and x4.

Layout of the authors' ``carn/model/carn_m.py`` (nmhkahn/CARN-pytorch), whose state-dict keys ours match::

    entry -> b1 -> c1 -> b2 -> c2 -> b3 -> c3 -> upsample.up{scale} -> exit

"Cascading" means every 1x1 fusion conv ``c{i}`` sees the concatenation of the entry features and *all*
earlier block outputs (``c1``: 2 x 64 channels, ``c2``: 3 x 64, ``c3``: 4 x 64), and the next block runs on
that fusion. Each block ``b{i}`` repeats the same pattern inside, but its three residual units are one module
``b{i}.b1`` applied three times (CARN-M's recursive weight sharing: ``b{i}.b1`` is the only unit in the
checkpoint). The units are "efficient" residual blocks: two grouped 3x3 convs (``group=4``, so 16 input
channels per group) and a 1x1 conv that mixes the groups again. Each ``upsample.up{s}`` head is a grouped
conv, ReLU and pixel shuffle per factor of 2 (one x3 stage for x3), all heads behind the same body: the
multi-scale network of the paper, whose published ``forward(x, scale)`` is here ``forward(x)`` with the head
picked by the settable ``self.scale``. Only the selected head runs, so the others get no gradient (DDP needs
``find_unused_parameters``; a student for one scale is best built with ``scales=(scale,)``).

The fixed mean shifts (``sub_mean``/``add_mean``: 1x1 identity convs with the DIV2K mean as bias, frozen in
the original) are a non-persistent buffer here, as in srkd's EDSR family, so their 24 constants are not
trainable parameters that an optimizer or EMA would have to skip, and ``img_range`` and a Y-only model need no
special case; ``DROPPED_KEYS`` names the published keys the loader drops and :func:`infer_kwargs` checks their
values. Counts: 414,787 parameters here + 24 dropped = 414,811 in the published file.

Every layer is a padded 3x3 or 1x1 convolution or a pixel shuffle (nothing downsamples), so the published code
runs on any input of at least 1x1 pixel, and so does this one, without padding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn

from srkd.errors import SrkdError
from srkd.models.blocks import DIV2K_RGB_MEAN, MeanShift
from srkd.models.layout import published_layout

# The shared unit's 1x1 conv: full-size CARN's residual units have no body.4, no other layout has b<i>.b1.
LAYOUT_MARKER = r"b\d+\.b1\.body\.4\.weight"
MULTI_SCALE = True
DROPPED_KEYS: str | None = r"(sub|add)_mean\.shifter\.(weight|bias)"

HEAD_SCALES = (2, 3, 4, 8)  # what the published pixel-shuffle heads can be built for


class Fuse(nn.Module):
    """1x1 conv + ReLU over a cascade's concatenated features (the authors' ``BasicBlock(.., 1, 1, 0)``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, 1, 0), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class EResidualBlock(nn.Module):
    """Grouped 3x3 -> ReLU -> grouped 3x3 -> ReLU -> 1x1, plus the input, then ReLU.

    The groups cut the 3x3 convs' cost by ``group``; the 1x1 conv lets the groups exchange information again.
    """

    def __init__(self, num_feat: int, group: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat, num_feat, 1, 1, 0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


def cascade(x: torch.Tensor, units: Iterable[nn.Module], fuses: Iterable[nn.Module]) -> torch.Tensor:
    """CARN's cascading connection, used at both levels (inside a block and across blocks).

    Each unit runs on the previous fusion's output; each fusion sees the input and every unit output so far.
    """
    stack = out = x
    for unit, fuse in zip(units, fuses, strict=True):
        stack = torch.cat([stack, unit(out)], dim=1)
        out = fuse(stack)
    return out


class CascadingBlock(nn.Module):
    """One residual unit ``b1`` applied ``num_unit`` times, cascaded through ``c1`` ... ``c{num_unit}``.

    The published block has a single unit whose weights all three steps share (CARN-M's parameter saving); the
    fusion convs are not shared.
    """

    def __init__(self, num_feat: int, num_unit: int, group: int) -> None:
        super().__init__()
        self.num_unit = num_unit
        self.b1 = EResidualBlock(num_feat, group)
        for i in range(1, num_unit + 1):
            self.add_module(f"c{i}", Fuse((i + 1) * num_feat, num_feat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fuses = [self.get_submodule(f"c{i}") for i in range(1, self.num_unit + 1)]
        return cascade(x, [self.b1] * self.num_unit, fuses)


class UpsampleHead(nn.Module):
    """Grouped conv to ``r*r`` times the channels, ReLU, shuffle by ``r``: per factor 2, or once for x3."""

    def __init__(self, num_feat: int, scale: int, group: int) -> None:
        super().__init__()
        factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        layers: list[nn.Module] = []
        for r in factors:
            layers += [
                nn.Conv2d(num_feat, r * r * num_feat, 3, 1, 1, groups=group),
                nn.ReLU(inplace=True),
                nn.PixelShuffle(r),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _check_sizes(num_feat: int, num_block: int, num_unit: int, group: int, in_channels: int) -> None:
    if min(num_feat, num_block, num_unit, group) < 1:
        raise SrkdError(
            f"carn_m: num_feat, num_block, num_unit and group must be >= 1, "
            f"got {num_feat}, {num_block}, {num_unit}, {group}"
        )
    if num_feat % group:
        raise SrkdError(f"carn_m: num_feat ({num_feat}) must be a multiple of group ({group})")
    if in_channels not in (1, 3):
        raise SrkdError(f"carn_m: in_channels must be 3 (RGB) or 1 (Y), got {in_channels}")


def _check_scales(scale: int, scales: Sequence[int]) -> tuple[int, ...]:
    heads = tuple(sorted({int(s) for s in scales}))
    if not heads or any(s not in HEAD_SCALES for s in heads):
        raise SrkdError(f"carn_m: scales must be a non-empty subset of {HEAD_SCALES}, got {tuple(scales)}")
    if int(scale) not in heads:
        raise SrkdError(f"carn_m: scale {scale} has no upsampler head (scales: {', '.join(map(str, heads))})")
    return heads


class CARNM(nn.Module):
    """CARN-M with one upsampler head per entry of ``scales``; ``self.scale`` picks the head at each forward.

    ``scale`` is the initial head; a loader may later set ``model.scale`` to any other entry of ``scales``.
    Defaults are the published network (group 4, three blocks of three shared-unit steps, x2/x3/x4 heads).
    """

    upsample_input = False

    def __init__(
        self,
        scale: int = 4,
        scales: Sequence[int] = (2, 3, 4),
        num_feat: int = 64,
        num_block: int = 3,
        num_unit: int = 3,
        group: int = 4,
        in_channels: int = 3,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        _check_sizes(num_feat, num_block, num_unit, group, in_channels)
        self.scales = _check_scales(scale, scales)
        self.scale = int(scale)
        self.num_block = num_block
        self.in_channels = in_channels
        self.colour = "rgb" if in_channels == 3 else "y"
        self.img_range = float(img_range)
        self.shift = MeanShift(in_channels, img_range, DIV2K_RGB_MEAN)
        self.entry = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        for i in range(1, num_block + 1):
            self.add_module(f"b{i}", CascadingBlock(num_feat, num_unit, group))
        for i in range(1, num_block + 1):
            self.add_module(f"c{i}", Fuse((i + 1) * num_feat, num_feat))
        self.upsample = nn.ModuleDict({f"up{s}": UpsampleHead(num_feat, s, group) for s in self.scales})
        self.exit = nn.Conv2d(num_feat, in_channels, 3, 1, 1)

    def _head(self) -> nn.Module:
        key = f"up{self.scale}"
        if key not in self.upsample:
            have = ", ".join(f"x{s}" for s in self.scales)
            raise SrkdError(f"carn_m: model.scale is {self.scale}, but this network has heads {have} only")
        return self.upsample[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self._head()
        blocks = [self.get_submodule(f"b{i}") for i in range(1, self.num_block + 1)]
        fuses = [self.get_submodule(f"c{i}") for i in range(1, self.num_block + 1)]
        x = cascade(self.entry(self.shift.normalize(x)), blocks, fuses)
        return self.shift.denormalize(self.exit(head(x)))

    def feature_taps(self) -> dict[str, str]:
        """The cascading blocks are the body; ``c{B}``, which fuses all of them, is the body's output."""
        taps = {"head": "entry"}
        taps.update({f"body.{i}": f"b{i + 1}" for i in range(self.num_block)})
        taps["body"] = f"c{self.num_block}"
        return taps


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    return sum(1 for k in state if re.fullmatch(pattern, k))


def _check_mean_shifts(state: dict[str, torch.Tensor]) -> None:
    """The dropped shifter convs must be what :class:`CARNM` hard-codes: identity weights, -/+ DIV2K mean."""
    mean = torch.tensor(DIV2K_RGB_MEAN)
    eye = torch.eye(3).view(3, 3, 1, 1)
    for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
        weight, bias = state.get(f"{name}.shifter.weight"), state.get(f"{name}.shifter.bias")
        if weight is None or bias is None:
            continue
        if weight.shape != eye.shape or not torch.equal(weight.float(), eye):
            raise ValueError(f"carn_m: {name}.shifter.weight is not the 3x3 identity the model assumes")
        if bias.shape != mean.shape or not torch.allclose(bias.float(), sign * mean, atol=1e-6):
            raise ValueError(
                f"carn_m: {name}.shifter.bias is {bias.tolist()}, expected {(sign * mean).tolist()} "
                "(the DIV2K mean)"
            )


def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor kwargs from a (wrapper-free) CARN-M state dict; ``scale`` is the smallest head's.

    The heads present give ``scales``; a multi-scale loader then sets ``model.scale`` to the scale it needs.
    """
    _check_mean_shifts(state)
    if "entry.weight" not in state:
        raise ValueError("carn_m: no entry.weight in the state dict")
    num_feat, in_channels = (int(v) for v in state["entry.weight"].shape[:2])
    num_block = _count(state, r"b\d+\.b1\.body\.0\.weight")
    num_unit = _count(state, r"b1\.c\d+\.body\.0\.weight")
    heads = (re.fullmatch(r"upsample\.up(\d+)\.body\.0\.weight", k) for k in state)
    scales = sorted(int(m.group(1)) for m in heads if m)
    if not num_block or not num_unit or not scales:
        raise ValueError("carn_m: the state dict has no cascading blocks or no upsample.up<s> heads")
    group = num_feat // int(state["b1.b1.body.0.weight"].shape[1])
    return {
        "scale": scales[0],
        "scales": tuple(scales),
        "num_feat": num_feat,
        "num_block": num_block,
        "num_unit": num_unit,
        "group": group,
        "in_channels": in_channels,
    }



LAYOUTS = (
    published_layout("carn_m", LAYOUT_MARKER, infer_kwargs, dropped=DROPPED_KEYS, multi_scale=MULTI_SCALE),
)

__all__ = ["CARNM", "DROPPED_KEYS", "LAYOUT_MARKER", "MULTI_SCALE", "infer_kwargs", "LAYOUTS"]
