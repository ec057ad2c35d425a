"""Blocks several architectures share: the sub-pixel upsampler, the dataset-mean shift, the fp32 residual stream
under autocast, zero-initialised residual branches and the EDSR-style tail (EDSR, RCAN, SwinIR; the published
efficient-SR networks use ``fp32_stream`` and ``zero_conv_``, CARN-M the mean shift).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn

from srkd.errors import SrkdError

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


STD_FLOOR = 1e-12  # variance floor in CCA: sqrt'(0) is infinite, so a constant feature map would give NaN grads


class ContrastChannelAttention(nn.Module):
    """Contrast-aware channel attention (IMDN's ``CCALayer``, kept by BSRN): gate each channel by a squeeze/excite
    MLP of its spatial standard deviation + mean.

    The statistics are taken in fp32 (a bf16 variance of near-constant features is mostly rounding) and the
    variance is floored at 1e-12 before the square root, so that a constant map (a 1-px input, a flat patch, a
    block zeroed by ``identity_``) trains instead of giving NaN gradients; the published weights' Set5 PSNR does
    not move.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mean = xf.mean(dim=(2, 3), keepdim=True)
        var = (xf - mean).pow(2).mean(dim=(2, 3), keepdim=True)
        stats = (var.clamp_min(STD_FLOOR).sqrt() + mean).to(x.dtype)
        return x * self.conv_du(stats)


__all__ = ["DIV2K_RGB_MEAN", "ContrastChannelAttention", "MeanShift", "Upsample", "fp32_stream", "make_tail", "zero_conv_"]
