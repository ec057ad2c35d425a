"""EDSR (Lim et al., CVPRW 2017): BN-free residual blocks, a conv after the body, pixel-shuffle upsampling.

Sizes used by the papers: 256 features / 32 blocks / ``res_scale=0.1`` (43.09M at x4, DUKD's teacher) and
64 / 32 (2.70M, its student); 64 / 16 is EDSR-baseline. The input is shifted by the DIV2K RGB mean and scaled
to ``img_range`` inside the network, so it takes and returns [0, 1] images like every srkd model.

Keys follow BasicSR's ``EDSR`` except for the head/tail names the srkd contract fixes (prefix renames)::

    conv_first. -> head.     upsample. -> tail.upsample.     conv_last. -> tail.conv_last.

EDSR-PyTorch (``.pt``) keys: ``head.0.`` -> ``head.``, ``body.<i>.body.0/2.`` -> ``body.<i>.conv1/conv2.``,
``body.<n_resblocks>.`` -> ``conv_after_body.``, ``tail.0.`` -> ``tail.upsample.``, ``tail.1.`` -> ``tail.conv_last.``
(its ``sub_mean``/``add_mean`` are fixed and dropped). The upsampler and mean shift here are shared by RCAN and SwinIR.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from srkd.errors import SrkdError
from srkd.models.layout import Layout, Rule, count_keys, mean_from_shift, upsampler_scale
from srkd.models.taps import standard_taps

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class Upsample(nn.Sequential):
    """Sub-pixel upsampler: (conv to 4x channels, shuffle 2) per factor 2, or one (9x, shuffle 3) for x3."""

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale in (2, 4, 8):
            for _ in range(scale.bit_length() - 1):
                layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise SrkdError(f"unsupported scale {scale} (pixel-shuffle upsamplers support 2, 3, 4, 8)")
        super().__init__(*layers)


class MeanShift(nn.Module):
    """Subtract the dataset mean and scale to ``img_range`` on the way in; undo it on the way out.

    The mean is a non-persistent buffer: it follows ``.to(device)`` but is not a weight, so it never appears in
    checkpoints (BasicSR keeps it out of the state dict too). A non-RGB input gets a zero mean.
    """

    mean: torch.Tensor  # buffer

    def __init__(self, in_channels: int, img_range: float, rgb_mean: Sequence[float]) -> None:
        super().__init__()
        mean = list(rgb_mean) if len(rgb_mean) == in_channels else [0.0] * in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, in_channels, 1, 1), persistent=False)
        self.img_range = float(img_range)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) * self.img_range

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.img_range + self.mean.to(x.dtype)


def fp32_stream(x: torch.Tensor) -> torch.Tensor:
    """Under bf16/fp16 autocast, carry the residual stream (and the output) in fp32; otherwise ``x`` itself.

    Autocast runs each convolution in bf16 but leaves the adds to the dtype of their inputs, so a residual stream
    that starts as a bf16 convolution output stays bf16 through every ``x + block(x)``: each add rounds to 8
    significant bits, and small residual updates (all of them early in training) are partly rounded away. With
    the stream in fp32 the convolutions still run in bf16 (autocast casts their inputs) while the sums keep full
    precision. Measured with ``srkd bench kd-accuracy``: the bf16 student's gap to fp32 after 200 DUKD steps
    shrank from -0.10 to -0.03 dB on seed 0 (benchmarks/README.md). Without autocast (fp32 training, inference,
    export) nothing changes.
    """
    if x.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


def zero_conv_(conv: nn.Conv2d) -> None:
    """Zero a residual branch's last convolution, so the branch adds nothing until training moves it. Its input
    convolutions still get gradients once this one has moved off zero (one step later), as in Fixup/ReZero."""
    with torch.no_grad():
        conv.weight.zero_()
        if conv.bias is not None:
            conv.bias.zero_()


def make_tail(scale: int, n_feats: int, out_channels: int, **extra: nn.Module) -> nn.Sequential:
    """``tail`` = [extra modules] -> ``upsample`` -> ``conv_last``, named so keys read like BasicSR's."""
    return nn.Sequential(
        OrderedDict(
            [
                *extra.items(),
                ("upsample", Upsample(scale, n_feats)),
                ("conv_last", nn.Conv2d(n_feats, out_channels, 3, 1, 1)),
            ]
        )
    )


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
