"""SMFANet (Zheng et al., ECCV 2024): feature modulation blocks (a pooled non-local gate and a partial FFN).

Published sizes: SMFANet is ``dim=36, n_blocks=8`` (185,628 / 190,503 / 197,328 parameters at x2 / x3 / x4),
SMFANet+ the same network with ``dim=48, n_blocks=12`` (480,300 / 486,795 / 495,888); both have
``ffn_scale=2``, take [0, 1] RGB without a mean shift (``img_range=1``) and end in one conv + pixel shuffle.
Keys are the published ones (``to_feat``, ``feats.<i>.smfa.*``, ``feats.<i>.pcfn.*``, ``to_img.0``), so the
authors' checkpoints load strictly and an srkd student loads back into their code.

Small and odd inputs. The attention gate max-pools ``x`` to ``(h // 8, w // 8)`` adaptive bins and brings the
gate back with nearest upsampling; the published code therefore fails below 8 pixels on a side (zero bins) and
returns NaN for a single pixel (unbiased variance of one value). Here the bin count is ``max(h // 8, 1)``: for
sides of 8 or more this is exactly the published computation (same bins, same nearest indices), and below 8 it
is what replicate-padding the pooled branch to 8 pixels gives, because copies of edge values never change a
maximum. Nothing else is padded, so no convolution sees invented borders and no crop is needed. The variance
uses all real pixels and divides by ``max(h*w - 1, 1)`` (0 for a single pixel instead of NaN).

Export. ONNX has no adaptive pooling over dynamic sizes, so under ``torch.onnx.export`` the same bins and
nearest indices are computed from the traced shape and applied with gathers (:func:`_pool_bins_export`,
:func:`_nearest_export`); eager forward uses the native kernels. Tests check both paths agree bit for bit.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.errors import SrkdError
from srkd.models.blocks import fp32_stream, zero_conv_
from srkd.models.layout import published_layout

LAYOUT_MARKER = r"feats\.\d+\.smfa\.linear_0\.weight"
MULTI_SCALE = False
DROPPED_KEYS: str | None = None

DOWN_SCALE = 8  # the gate's pooling factor in the published network
P_RATE = 0.25  # share of the FFN's hidden channels that get the 3x3 conv (published PCFN default)
# Longest adaptive bin along a side: n = max(s // 8, 1) bins over s pixels are at most ceil(s / n) + 1 <= 17.
_MAX_BIN = 2 * DOWN_SCALE + 1


def _as_tensor(size: Any, device: torch.device) -> torch.Tensor:
    """A size as a tensor: the ONNX tracer already hands out shapes as traced tensors (keep them, so the graph
    follows the input's size); eager calls (tests) give ints."""
    return size.to(device) if isinstance(size, torch.Tensor) else torch.tensor(size, device=device)


def _pool_bins_export(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Adaptive max pool of ``x`` along ``dim`` into ``max(size // 8, 1)`` bins, from gathers (exportable).

    Bin ``i`` covers ``[floor(i*s/n), ceil((i+1)*s/n))`` as in ATen; shorter bins repeat their last index,
    which leaves the maximum unchanged.
    """
    size = _as_tensor(x.shape[dim], x.device)
    n = torch.clamp(size // DOWN_SCALE, min=1)
    # n is a 0-d tensor (traced under export, so the graph follows the input size); the stubs only take ints
    i = torch.arange(n, device=x.device)  # type: ignore[call-overload]
    start = (i * size) // n
    end = ((i + 1) * size + n - 1) // n
    out = x.index_select(dim, start)
    for k in range(1, _MAX_BIN):
        out = torch.maximum(out, x.index_select(dim, torch.minimum(start + k, end - 1)))
    return out


def _nearest_export(gate: torch.Tensor, dim: int, size: Any) -> torch.Tensor:
    """Nearest upsampling along ``dim`` to ``size``, with ATen's float32 index rule ``floor(i * (n / size))``
    (integer arithmetic would differ where ``i * n / size`` is a whole number)."""
    n = _as_tensor(gate.shape[dim], gate.device)
    size = _as_tensor(size, gate.device)
    scale = n.to(torch.float32) / size.to(torch.float32)
    idx = torch.floor(torch.arange(size, device=gate.device).to(torch.float32) * scale).to(torch.int64)
    return gate.index_select(dim, torch.minimum(idx, n - 1))


def _variance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased spatial variance (fp32), with the divisor kept >= 1 so a single pixel gives 0, not NaN."""
    x = x.float()
    count = _as_tensor(x.shape[-2] * x.shape[-1], x.device).to(x.dtype)
    centred = x - x.mean(dim=(-2, -1), keepdim=True)
    return (centred * centred).sum(dim=(-2, -1), keepdim=True) / torch.clamp(count - 1, min=1)


class LocalDetail(nn.Module):
    """The local branch (``lde``): depthwise 3x3 to ``growth`` x channels, pointwise mix, GELU, projection."""

    def __init__(self, dim: int, growth: int = 2) -> None:
        super().__init__()
        hidden = dim * growth
        self.conv_0 = nn.Sequential(nn.Conv2d(dim, hidden, 3, 1, 1, groups=dim), nn.Conv2d(hidden, hidden, 1))
        self.act = nn.GELU()
        self.conv_1 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1(self.act(self.conv_0(x)))


class SMFA(nn.Module):
    """Self-modulation feature aggregation: half the channels are gated by a pooled, variance-shifted map
    (non-local context at 1/8 resolution), the other half go through the local branch; the sum is
    projected."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_0 = nn.Conv2d(dim, dim * 2, 1)
        self.linear_1 = nn.Conv2d(dim, dim, 1)
        self.linear_2 = nn.Conv2d(dim, dim, 1)
        self.lde = LocalDetail(dim, 2)
        self.dw_conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.gelu = nn.GELU()
        self.alpha = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.belt = nn.Parameter(torch.zeros(1, dim, 1, 1))  # the published name (beta)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        y, x = self.linear_0(f).chunk(2, dim=1)
        h, w = x.shape[-2:]
        if torch.onnx.is_in_onnx_export():
            pooled = _pool_bins_export(_pool_bins_export(x, 2), 3)
        else:
            pooled = F.adaptive_max_pool2d(x, (max(h // DOWN_SCALE, 1), max(w // DOWN_SCALE, 1)))
        stats = self.dw_conv(pooled) * self.alpha + _variance(x).to(pooled.dtype) * self.belt
        gate = self.gelu(self.linear_1(stats))
        if torch.onnx.is_in_onnx_export():
            gate = _nearest_export(_nearest_export(gate, 2, h), 3, w)
        else:
            gate = F.interpolate(gate, size=(h, w), mode="nearest")
        return self.linear_2(x * gate + self.lde(y))


class PCFN(nn.Module):
    """Partial convolution FFN: pointwise expand, a 3x3 conv on the first ``P_RATE`` of the hidden channels
    only (cheap spatial mixing), pointwise project. The published eval path writes the slice in place; this
    is the same function written once with split/cat so that it also trains and exports."""

    def __init__(self, dim: int, growth: float = 2.0) -> None:
        super().__init__()
        self.hidden = int(dim * growth)
        self.p_dim = int(self.hidden * P_RATE)
        self.conv_0 = nn.Conv2d(dim, self.hidden, 1)
        self.conv_1 = nn.Conv2d(self.p_dim, self.p_dim, 3, 1, 1)
        self.act = nn.GELU()
        self.conv_2 = nn.Conv2d(self.hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv_0(x))
        part, rest = torch.split(x, [self.p_dim, self.hidden - self.p_dim], dim=1)
        return self.conv_2(torch.cat([self.act(self.conv_1(part)), rest], dim=1))


class FMB(nn.Module):
    """Feature modulation block: SMFA then PCFN, each on channel-L2-normalised input with a residual add."""

    def __init__(self, dim: int, ffn_scale: float) -> None:
        super().__init__()
        self.smfa = SMFA(dim)
        self.pcfn = PCFN(dim, ffn_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.smfa(F.normalize(x, dim=1))
        return x + self.pcfn(F.normalize(x, dim=1))

    def identity_(self) -> None:
        """Zero both residual branches' output projections: the block then computes its input (progressive
        growth keeps the network's function)."""
        zero_conv_(self.smfa.linear_2)
        zero_conv_(self.pcfn.conv_2)


class SMFANet(nn.Module):
    """SMFANet / SMFANet+ (see the module docstring for sizes and small-input behaviour).

    ``head``, ``body`` and ``tail`` are read-only aliases of ``to_feat``, ``feats`` and ``to_img`` (no extra
    state-dict keys), for the code that splits bodies into segments.
    """

    upsample_input = False

    def __init__(
        self,
        scale: int = 4,
        dim: int = 36,
        n_blocks: int = 8,
        ffn_scale: float = 2.0,
        in_channels: int = 3,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        _check_sizes(scale, dim, n_blocks, ffn_scale, in_channels, img_range)
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "rgb" if in_channels == 3 else "y"
        self.img_range = float(img_range)
        self.to_feat = nn.Conv2d(in_channels, dim, 3, 1, 1)
        self.feats = nn.Sequential(*(FMB(dim, ffn_scale) for _ in range(n_blocks)))
        self.to_img = nn.Sequential(
            nn.Conv2d(dim, in_channels * self.scale**2, 3, 1, 1), nn.PixelShuffle(self.scale)
        )

    @property
    def head(self) -> nn.Module:
        return self.to_feat

    @property
    def body(self) -> nn.Sequential:
        return self.feats

    @property
    def tail(self) -> nn.Module:
        return self.to_img

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fp32_stream(self.to_feat(x * self.img_range))
        x = x + self.feats(x)
        return fp32_stream(self.to_img(x)) / self.img_range

    def feature_taps(self) -> dict[str, str]:
        last = len(self.feats) - 1
        blocks = {f"body.{i}": f"feats.{i}" for i in range(last + 1)}
        return {"head": "to_feat", **blocks, "body": f"feats.{last}"}


def _check_sizes(
    scale: int, dim: int, n_blocks: int, ffn_scale: float, in_channels: int, img_range: float
) -> None:
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise SrkdError(f"SMFANet: unsupported scale {scale!r} (a positive integer; published: 2, 3, 4)")
    for name, value in (("dim", dim), ("n_blocks", n_blocks), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SrkdError(f"SMFANet: {name} must be a positive integer, got {value!r}")
    if not ffn_scale > 0 or int(int(dim * ffn_scale) * P_RATE) < 1:
        raise SrkdError(f"SMFANet: dim * ffn_scale must be at least 4 (the FFN's 3x3 part is a quarter), "
                        f"got dim={dim}, ffn_scale={ffn_scale!r}")
    if not img_range > 0:
        raise SrkdError(f"SMFANet: img_range must be positive, got {img_range!r}")


def infer_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor kwargs of a published (or srkd-trained) SMFANet state dict, read from tensor shapes."""
    dim, in_channels = state["to_feat.weight"].shape[:2]
    found = (re.fullmatch(r"feats\.(\d+)\.smfa\.linear_0\.weight", k) for k in state)
    blocks = {int(m.group(1)) for m in found if m}
    if not blocks or blocks != set(range(len(blocks))):
        raise ValueError(f"SMFANet: feats.<i> blocks are not numbered 0..n-1: {sorted(blocks)}")
    hidden = state["feats.0.pcfn.conv_0.weight"].shape[0]
    ffn_scale = hidden / dim
    p_dim = state["feats.0.pcfn.conv_1.weight"].shape[0]
    if int(dim * ffn_scale) != hidden or int(hidden * P_RATE) != p_dim:
        raise ValueError(f"SMFANet: FFN widths {hidden}/{p_dim} do not fit dim={dim} (quarter partial conv)")
    out = state["to_img.0.weight"].shape[0]
    scale = math.isqrt(out // in_channels)
    if scale < 1 or in_channels * scale**2 != out:
        raise ValueError(f"SMFANet: to_img.0 has {out} outputs, not {in_channels} * scale**2")
    return {
        "scale": scale,
        "dim": int(dim),
        "n_blocks": len(blocks),
        "ffn_scale": float(ffn_scale),
        "in_channels": int(in_channels),
        "img_range": 1.0,
    }



LAYOUTS = (
    published_layout("smfanet", LAYOUT_MARKER, infer_kwargs, dropped=DROPPED_KEYS, multi_scale=MULTI_SCALE),
)

__all__ = ["DROPPED_KEYS", "LAYOUT_MARKER", "MULTI_SCALE", "SMFANet", "infer_kwargs", "LAYOUTS"]
