"""RFDN (Liu et al., ECCV-W 2020; AIM 2020 efficient-SR winner): residual feature distillation blocks.

Each block (RFDB) runs three stages of "1x1 conv -> distilled features" beside "3x3 conv + identity -> refined
features", a last 3x3 conv, a 1x1 fusion of the four distilled parts, and enhanced spatial attention (ESA): a
quarter-width branch that is strided, max-pooled (7x7, stride 3), convolved and bilinearly upsampled back into a
sigmoid gate over the block's output. The block outputs are concatenated and fused (1x1 + LeakyReLU, ``c``),
passed through a 3x3 conv (``LR_conv``), added to the head features and upsampled by one conv + pixel shuffle.

Published weights (njulj/RFDN, ``trained_model/RFDN_AIM.pth``): x4 only, 50 features, 4 blocks, 433,448
parameters. **They expect pixel values in 0-255**: the official test script feeds uint8-range tensors (its
``uint2tensor4`` divides by 1.0), and fed [0, 1] the network scores 26 dB on Set5 instead of 32.16. This model
multiplies its [0, 1] input by ``img_range`` and divides the output by it, so the published weights need
``img_range=255``: the default here, and what :func:`infer_kwargs` returns (the range cannot be read from tensor
shapes). A student built from scratch may use another range; the default keeps its features on the published
teacher's scale.
Keys are the official ones (``fea_conv``, ``B<k>.c{1,2,3}_{d,r}``, ``B<k>.c4/c5``, ``B<k>.esa.*``, ``c.0``,
``LR_conv``, ``upsampler.0``).

Small inputs: ESA's stride-2 3x3 conv followed by a 7x7 max-pool needs at least 15x15 features, so the official
network raises on LR inputs smaller than 15 px (DUKD's x4 zoom-out of a 48 px patch is 12 px). Here ESA
replicate-pads its quarter-width features at the bottom/right up to 15 px before the strided branch, upsamples the
gate to the padded size and crops it back: exactly the official ESA run on an edge-extended feature map.
Replicate, not reflect, because reflection cannot pad a map by more than its own size (a 1 px input needs 14).
At 15 px and above nothing is padded and the result is the official one.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.errors import SrkdError
from srkd.models.imdn_arch import LRELU_SLOPE, DistillationTrunk, conv, scale_from_upsampler
from srkd.models.layout import published_layout

LAYOUT_MARKER = r"(?:module\.)?B\d+\.c1_r\.weight"  # BSRN's B<k>.c1_r is blueprint-separable: B<k>.c1_r.pw/dw.*
MULTI_SCALE = False
DROPPED_KEYS: str | None = None

SUPPORTED_SCALES = (2, 3, 4, 8)
PUBLISHED_IMG_RANGE = 255.0
ESA_MIN_SIZE = 15  # stride-2 3x3 conv (15 -> 7), then a 7x7 max-pool (7 -> 1)


def _shortfall(size: Any, minimum: int) -> Any:
    """``max(0, minimum - size)``; under ONNX/JIT tracing ``size`` is a tensor, kept symbolic so that the exported
    graph pads (or not) at run time for any input size instead of baking in the trace size's decision."""
    if isinstance(size, torch.Tensor):
        return (minimum - size).clamp(min=0)
    return max(0, minimum - size)


class ESA(nn.Module):
    """Enhanced spatial attention (the official ``ESA`` with ``nn.Conv2d``), padded for small inputs."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        f = num_feat // 4
        self.conv1 = nn.Conv2d(num_feat, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, num_feat, 1)
        self.sigmoid = nn.Sigmoid()
        self.relu = nn.ReLU(inplace=True)

    def _gate_field(self, c1_: torch.Tensor) -> torch.Tensor:
        """The low-resolution branch, upsampled back to ``c1_``'s (padded) size."""
        c1 = self.conv2(c1_)
        v_range = self.relu(self.conv_max(F.max_pool2d(c1, kernel_size=7, stride=3)))
        c3 = self.conv3_(self.relu(self.conv3(v_range)))
        return F.interpolate(c3, (c1_.shape[2], c1_.shape[3]), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        h, w = x.shape[2], x.shape[3]
        tracing = torch.jit.is_tracing()
        ph, pw = _shortfall(h, ESA_MIN_SIZE), _shortfall(w, ESA_MIN_SIZE)
        if tracing or ph or pw:
            c3 = self._gate_field(F.pad(c1_, [0, pw, 0, ph], mode="replicate"))[:, :, :h, :w]
        else:
            c3 = self._gate_field(c1_)
        return x * self.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RFDB(nn.Module):
    """Residual feature distillation block (the official ``RFDB``)."""

    def __init__(self, num_feat: int) -> None:
        super().__init__()
        dc = num_feat // 2
        self.c1_d = conv(num_feat, dc, 1)
        self.c1_r = conv(num_feat, num_feat, 3)
        self.c2_d = conv(num_feat, dc, 1)
        self.c2_r = conv(num_feat, num_feat, 3)
        self.c3_d = conv(num_feat, dc, 1)
        self.c3_r = conv(num_feat, num_feat, 3)
        self.c4 = conv(num_feat, dc, 3)
        self.act = nn.LeakyReLU(LRELU_SLOPE, inplace=True)
        self.c5 = conv(dc * 4, num_feat, 1)
        self.esa = ESA(num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.act(self.c1_d(x))
        r1 = self.act(self.c1_r(x) + x)
        d2 = self.act(self.c2_d(r1))
        r2 = self.act(self.c2_r(r1) + r1)
        d3 = self.act(self.c3_d(r2))
        r3 = self.act(self.c3_r(r2) + r2)
        r4 = self.act(self.c4(r3))
        return self.esa(self.c5(torch.cat([d1, d2, d3, r4], dim=1)))


def _check_sizes(scale: int, num_feat: int, num_block: int, in_channels: int) -> None:
    if scale not in SUPPORTED_SCALES:
        raise SrkdError(f"RFDN: unsupported scale {scale} (supported: {', '.join(map(str, SUPPORTED_SCALES))})")
    if num_feat < 4:
        raise SrkdError(f"RFDN: num_feat must be >= 4 (ESA works on num_feat // 4 channels), got {num_feat}")
    if num_block < 1:
        raise SrkdError(f"RFDN: num_block must be >= 1, got {num_block}")
    if in_channels < 1:
        raise SrkdError(f"RFDN: in_channels must be >= 1, got {in_channels}")


class RFDN(DistillationTrunk):
    """RFDN; ``forward`` maps [0, 1] images to [0, 1] images (unclamped), ``scale`` times larger."""

    block_prefix = "B"  # top-level B1..Bn, as in the checkpoint

    def __init__(
        self,
        scale: int = 4,
        num_feat: int = 50,
        num_block: int = 4,
        in_channels: int = 3,
        img_range: float = PUBLISHED_IMG_RANGE,
    ) -> None:
        super().__init__()
        _check_sizes(int(scale), num_feat, num_block, in_channels)
        self._build(scale, num_feat, num_block, in_channels, img_range, lambda: RFDB(num_feat))


def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor kwargs of the RFDN that ``state`` belongs to; ``img_range`` is the published 255 (module doc)."""
    try:
        num_feat, in_channels = state["fea_conv.weight"].shape[:2]
        up_ch = state["upsampler.0.weight"].shape[0]
        fused_in = state["c.0.weight"].shape[1]
    except KeyError as err:
        raise ValueError(f"not an RFDN state dict: missing {err}") from None
    num_block = sum(1 for key in state if re.fullmatch(r"B\d+\.c1_r\.weight", key))
    if fused_in != num_feat * num_block:
        raise ValueError(f"RFDN: fusion conv expects {fused_in} channels, not {num_block} blocks of {num_feat}")
    return dict(
        scale=scale_from_upsampler("RFDN", int(up_ch), int(in_channels)),
        num_feat=int(num_feat),
        num_block=num_block,
        in_channels=int(in_channels),
        img_range=PUBLISHED_IMG_RANGE,
    )

LAYOUTS = (
    published_layout("rfdn", LAYOUT_MARKER, infer_kwargs, dropped=DROPPED_KEYS, multi_scale=MULTI_SCALE),
)
