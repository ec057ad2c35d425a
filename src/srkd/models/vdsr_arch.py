"""VDSR (Kim et al., CVPR 2016): 20 plain 3x3 convolutions that predict the residual to a bicubic upscale.

One network serves x2/x3/x4 (it was trained on a mix of scales), so ``scale`` is only a settable attribute that
:func:`srkd.models.run_sr` uses to bicubic-upscale the input; the convolutions never see it.

The default layout is the bias-free pytorch-vdsr one (664,704 parameters at 64 features), which the pretrained
teacher in ``shared/weights/vdsr`` uses. Its state-dict keys map to ours by prefix::

    input.  -> head.conv.     residual_layer.<i>.conv. -> body.<i>.conv.     output. -> tail.

The MatConvNet release has biases: build it with ``bias=True``. The data-free paper's student "VDSR-half" is
``n_feats=32``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from srkd.errors import SrkdError
from srkd.models.layout import Layout, count_keys
from srkd.models.taps import standard_taps


class ConvReLU(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))

    def identity_(self) -> None:
        """Make the layer the identity map on its inputs (function-preserving progressive growth): a Dirac
        kernel copies each channel and the ReLU passes it unchanged, because a body layer's input is the output
        of a ReLU (the head's or the previous layer's), so it is never negative."""
        if self.conv.in_channels != self.conv.out_channels:
            raise SrkdError("ConvReLU.identity_: needs as many input as output channels")
        with torch.no_grad():
            nn.init.dirac_(self.conv.weight)
            if self.conv.bias is not None:
                self.conv.bias.zero_()


class VDSR(nn.Module):
    colour = "y"
    upsample_input = True

    def __init__(
        self, scale: int = 2, n_feats: int = 64, n_layers: int = 20, in_channels: int = 1, bias: bool = False
    ) -> None:
        super().__init__()
        if n_layers < 2:
            raise SrkdError(f"vdsr: n_layers must be >= 2 (first and last conv), got {n_layers}")
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "y" if in_channels == 1 else "rgb"
        self.head = ConvReLU(in_channels, n_feats, bias)
        self.body = nn.Sequential(*(ConvReLU(n_feats, n_feats, bias) for _ in range(n_layers - 2)))
        self.tail = nn.Conv2d(n_feats, in_channels, 3, 1, 1, bias=bias)
        # He initialisation as in the paper (fan-out, like pytorch-vdsr): a plain 20-layer ReLU stack does not
        # train from PyTorch's default init at the paper's learning rates.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (9 * m.out_channels)))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is the bicubic upscale (output size); the network adds the missing high frequencies."""
        return self.tail(self.body(self.head(x))) + x

    def feature_taps(self) -> dict[str, str]:
        return standard_taps(self.body, body_out="body")


def _infer(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
    first = state["input.weight"]
    kwargs = {
        "scale": 2,
        "n_feats": int(first.shape[0]),
        "n_layers": 2 + count_keys(state, r"residual_layer\.\d+\.conv\.weight"),
        "in_channels": int(first.shape[1]),
        "bias": "input.bias" in state,
    }
    return kwargs, []


# pytorch-vdsr keys; the MatConvNet release is read into the same names (srkd.checkpoint.convert).
LAYOUTS = (
    Layout(
        "pytorch-vdsr", "vdsr", r"residual_layer\.0\.conv\.weight", _infer,
        ((r"input\.(.*)", r"head.conv.\1"), (r"residual_layer\.(\d+)\.conv\.(.*)", r"body.\1.conv.\2"),
         (r"output\.(.*)", r"tail.\1")),
        multi_scale=True,
    ),
)
