"""SwinIR for classical SR (Liang et al., ICCVW 2021): residual Swin transformer blocks (RSTB) between a conv head
and a pixel-shuffle tail.

Sizes: the classical teacher is ``embed_dim=180, depths=(6,)*6, num_heads=(6,)*6`` (11.90M at x4). DUKD's student
"60 channels, 4 blocks" (1.24M at x4) is ``embed_dim=60, depths=(6,)*4, num_heads=(6,)*4`` with the same
``pixelshuffle`` tail (64 features): four RSTBs of six Swin layers each, i.e. the lightweight SwinIR body with the
classical upsampler. ``pixelshuffledirect`` (one conv + shuffle, lightweight SwinIR) is also available.

Any input size works: the input is reflect-padded to a multiple of ``window_size`` (replicate when it is smaller
than the pad) and the output cropped, as the official network and BasicSR's SwinIR validation do. Shifted-window
masks are built for the actual (padded) size and cached per size; the relative position bias depends only on the
window.
``img_size`` is accepted for config compatibility and not used (nothing is precomputed for one size).

Keys follow the official SwinIR / BasicSR layout, with these prefix renames::

    conv_first. -> head.        layers.<i>. -> body.<i>.        conv_before_upsample. -> tail.conv_before_upsample.
    upsample.   -> tail.upsample.                               conv_last.            -> tail.conv_last.

The official buffers ``...attn.relative_position_index`` and ``...attn_mask`` are not stored here (drop them);
everything inside an RSTB (``residual_group.blocks.<j>.norm1/attn.qkv/attn.proj/attn.relative_position_bias_table/
norm2/mlp.fc1/mlp.fc2``, ``conv``) and ``patch_embed.norm``, ``norm``, ``conv_after_body`` keep their names.
RSTBs take and return images (N, C, H, W) so that ``body`` is a plain ``nn.Sequential``; this is the official
computation, with the patch (un)embedding moved inside each block.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.errors import CheckpointError, SrkdError
from srkd.models.blocks import DIV2K_RGB_MEAN, MeanShift, fp32_stream, make_tail, zero_conv_
from srkd.models.layout import Layout, Rule, count_keys, upsampler_scale
from srkd.models.taps import standard_taps


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, ws * ws, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * windows, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


@functools.lru_cache(maxsize=32)
def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """(windows, ws*ws, ws*ws) additive mask (0 / -100) that stops a cyclically shifted window from mixing pixels
    that were not neighbours before the roll. Built outside inference mode so training may reuse it."""
    with torch.inference_mode(False), torch.no_grad():

        def bands(n: int) -> torch.Tensor:
            label = torch.zeros(n, device=device)
            label[n - ws : n - shift] = 1
            label[n - shift :] = 2
            return label

        region = bands(h)[:, None] * 3 + bands(w)[None, :]
        win = window_partition(region[None, :, :, None], ws).squeeze(-1)  # (windows, N)
        return (win[:, None, :] != win[:, :, None]).float() * -100.0


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned bias per relative offset (per head)."""

    relative_position_index: torch.Tensor  # buffer

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        coords = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        )
        rel = (coords.flatten(1)[:, :, None] - coords.flatten(1)[:, None, :]) + (window_size - 1)  # (2, N, N)
        self.register_buffer(
            "relative_position_index", rel[0] * (2 * window_size - 1) + rel[1], persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)
        # 4-D inputs with a batch-broadcast mask keep SDPA on its fused (flash) kernel; 5-D falls back to the
        # ~4x slower math path.
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None].to(q.dtype))
        else:  # fold windows into the head axis so the (windows, N, N) mask broadcasts over the batch
            nw = mask.shape[0]
            q, k, v = (t.reshape(bw // nw, nw * self.num_heads, n, -1) for t in (q, k, v))
            attn_mask = (bias[None] + mask[:, None]).reshape(1, nw * self.num_heads, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype))
        return self.proj(out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample, rescaling the kept ones."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class SwinLayer(nn.Module):
    """(Shifted-)window attention + MLP, pre-norm residuals, on channels-last tokens (B, H, W, C)."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float, dpr: float
    ) -> None:
        super().__init__()
        self.window_size, self.shift, self.drop_path = window_size, shift, dpr
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        ws, s = self.window_size, self.shift
        y = self.norm1(x)
        mask = None
        if s:
            y = torch.roll(y, (-s, -s), (1, 2))
            mask = shifted_window_mask(h, w, ws, s, x.device)
        y = window_reverse(self.attn(window_partition(y, ws), mask), ws, h, w)
        if s:
            y = torch.roll(y, (s, s), (1, 2))
        x = x + drop_path(y, self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class SwinGroup(nn.Module):
    def __init__(self, layers: list[SwinLayer]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class RSTB(nn.Module):
    """Residual Swin transformer block on images: Swin layers on tokens, a 3x3 conv, a residual connection."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        dpr: Sequence[float],
        resi_connection: str,
    ) -> None:
        super().__init__()
        self.residual_group = SwinGroup(
            [
                SwinLayer(
                    dim, num_heads, window_size, 0 if j % 2 == 0 else window_size // 2, mlp_ratio, dpr[j]
                )
                for j in range(depth)
            ]
        )
        if resi_connection == "1conv":
            self.conv: nn.Module = nn.Conv2d(dim, dim, 3, 1, 1)
        elif resi_connection == "3conv":  # the official memory-saving variant
            self.conv = nn.Sequential(
                nn.Conv2d(dim, dim // 4, 3, 1, 1),
                nn.LeakyReLU(0.2, True),
                nn.Conv2d(dim // 4, dim // 4, 1),
                nn.LeakyReLU(0.2, True),
                nn.Conv2d(dim // 4, dim, 3, 1, 1),
            )
        else:
            raise SrkdError(f"swinir: resi_connection must be '1conv' or '3conv', got '{resi_connection}'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.residual_group(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.conv(y.contiguous())

    def identity_(self) -> None:
        """Make the block the identity map (zero its last conv): function-preserving progressive growth."""
        last = self.conv[-1] if isinstance(self.conv, nn.Sequential) else self.conv
        assert isinstance(last, nn.Conv2d)
        zero_conv_(last)


class ImageLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) image (the official one runs on flattened tokens)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchEmbed(nn.Module):
    """Only the norm of the official patch embedding remains (patch size 1: flattening is a no-op here)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = ImageLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def _per_stage(value: int | Sequence[int], n: int, name: str) -> list[int]:
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n:
        raise SrkdError(f"swinir: {name} has {len(values)} entries but depths has {n}")
    return values


class SwinIR(nn.Module):
    upsample_input = False

    def __init__(
        self,
        scale: int = 4,
        in_channels: int = 3,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: int | Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        img_size: int = 64,
        upsampler: str = "pixelshuffle",
        resi_connection: str = "1conv",
        img_range: float = 1.0,
        rgb_mean: Sequence[float] = DIV2K_RGB_MEAN,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        depths = list(depths)
        heads = _per_stage(num_heads, len(depths), "num_heads")
        if any(embed_dim % h for h in heads):
            raise SrkdError(f"swinir: embed_dim {embed_dim} is not divisible by num_heads {heads}")
        self.scale = int(scale)
        self.in_channels = in_channels
        self.colour = "rgb" if in_channels == 3 else "y"
        self.window_size = window_size
        self.shift = MeanShift(in_channels, img_range, rgb_mean)
        self.head = nn.Conv2d(in_channels, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        # Stochastic depth rises linearly over all Swin layers (official default 0.1; no effect in eval).
        n_layers = sum(depths)
        dpr = [drop_path_rate * i / max(n_layers - 1, 1) for i in range(n_layers)]
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.body = nn.Sequential(
            *(
                RSTB(embed_dim, d, h, window_size, mlp_ratio, dpr[s : s + d], resi_connection)
                for d, h, s in zip(depths, heads, starts)
            )
        )
        self.norm = ImageLayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        if upsampler == "pixelshuffle":
            before = nn.Sequential(nn.Conv2d(embed_dim, 64, 3, 1, 1), nn.LeakyReLU(inplace=True))
            self.tail = make_tail(self.scale, 64, in_channels, conv_before_upsample=before)
        elif upsampler == "pixelshuffledirect":
            self.tail = nn.Sequential()
            self.tail.add_module(
                "upsample",
                nn.Sequential(
                    nn.Conv2d(embed_dim, in_channels * self.scale**2, 3, 1, 1), nn.PixelShuffle(self.scale)
                ),
            )
        else:
            raise SrkdError(
                f"swinir: upsampler must be 'pixelshuffle' or 'pixelshuffledirect', got '{upsampler}'"
            )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.window_size, -w % self.window_size
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        x = fp32_stream(self.head(self.shift.normalize(x)))  # residual stream in fp32 under autocast
        x = x + self.conv_after_body(self.norm(self.body(self.patch_embed(x))))
        x = self.shift.denormalize(fp32_stream(self.tail(x)))
        return x[..., : h * self.scale, : w * self.scale]

    def feature_taps(self) -> dict[str, str]:
        return standard_taps(self.body, body_out="conv_after_body")


def _infer(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], list[str]]:
    if "conv_up1.weight" in state:
        raise CheckpointError("it is a real-world SwinIR (nearest+conv upsampler), which srkd does not implement")
    first = state["conv_first.weight"]
    embed_dim, in_channels = int(first.shape[0]), int(first.shape[1])
    n_stages = count_keys(state, r"layers\.\d+\.residual_group\.blocks\.0\.attn\.qkv\.weight")
    depths = [count_keys(state, rf"layers\.{i}\.residual_group\.blocks\.\d+\.attn\.qkv\.weight") for i in range(n_stages)]
    tables = [state[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"] for i in range(n_stages)]
    window_size = (math.isqrt(int(tables[0].shape[0])) + 1) // 2
    hidden = state["layers.0.residual_group.blocks.0.mlp.fc1.weight"].shape[0]
    kwargs: dict[str, Any] = {
        "in_channels": in_channels,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": [int(t.shape[1]) for t in tables],
        "window_size": window_size,
        "mlp_ratio": hidden / embed_dim,
        "resi_connection": "3conv" if "layers.0.conv.0.weight" in state else "1conv",
    }
    if "conv_before_upsample.0.weight" in state:
        kwargs["upsampler"] = "pixelshuffle"
        kwargs["scale"] = upsampler_scale(state, "upsample.", int(state["conv_before_upsample.0.weight"].shape[0]))
    else:
        kwargs["upsampler"] = "pixelshuffledirect"
        kwargs["scale"] = math.isqrt(int(state["upsample.0.weight"].shape[0]) // in_channels)
    masks = [v for k, v in state.items() if k.endswith("attn_mask")]
    if masks:  # (windows, N, N) for the training patch size; informative only, the model works at any size
        kwargs["img_size"] = window_size * math.isqrt(int(masks[0].shape[0]))
    return kwargs, []


_RULES: tuple[Rule, ...] = (
    (r".*\.attn\.relative_position_index", None),  # derived from the window size; srkd recomputes it
    (r".*\.attn_mask", None),  # depends on the training patch size; srkd builds masks per input size
    (r"conv_first\.(.*)", r"head.\1"),
    (r"layers\.(\d+)\.(.*)", r"body.\1.\2"),
    (r"conv_before_upsample\.(.*)", r"tail.conv_before_upsample.\1"),
    (r"upsample\.(.*)", r"tail.upsample.\1"),
    (r"conv_last\.(.*)", r"tail.conv_last.\1"),
)
_MARKER = r"layers\.0\.residual_group\.blocks\.0\.attn\.qkv\.weight"
LAYOUTS = (
    Layout("swinir", "swinir", _MARKER, _infer, _RULES),
    Layout("basicsr", "swinir", _MARKER, _infer, _RULES),  # BasicSR kept the official keys
)
