"""PSNR and SSIM on the Y channel, numerically the protocol of BasicSR's ``calculate_psnr`` / ``calculate_ssim``
with ``test_y_channel=True`` (what SR papers report), but batched in torch.

Conventions (each one changes the number, so they are fixed here and tested against BasicSR 1.4.2):

- values are compared on the 0-255 scale in float64. ``uint8`` images are used as they are; float images are taken
  to be in [0, 1] and multiplied by 255 *without* re-quantising (quantise first with ``srkd.data.images.quantize``
  to score what a saved PNG would score);
- ``crop_border`` pixels are removed from every edge before anything else (BasicSR's ``crop_border``; the papers use
  ``crop_border = scale``);
- 3-channel images are reduced to MATLAB's BT.601 Y (16-235 range, float, not rounded); 1-channel images are
  compared on their own values, as BasicSR does for 2-D grayscale arrays. When one side has 1 channel and the other
  3, the gray side is first replicated to 3 channels (what OpenCV's default colour read does), so both get the Y
  transform;
- PSNR = 10 log10(255^2 / MSE), ``inf`` for identical images; SSIM uses an 11x11 Gaussian window (sigma 1.5) over the
  valid region only, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, and is averaged over channels.

Inputs are ``(C, H, W)`` (returns a 0-d tensor) or ``(N, C, H, W)`` (returns one value per image, shape ``(N,)``).
"""

from __future__ import annotations

import functools

import torch

from srkd.errors import DataError
from srkd.ops.color import rgb_to_y

__all__ = ["psnr_y", "ssim_y", "to_y_255"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def to_y_255(img: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W)`` uint8 or float [0, 1] -> float64 on the 0-255 scale; Y channel if ``C == 3``."""
    x = img.to(torch.float64)
    if img.is_floating_point():
        x = x * 255.0
    if x.shape[-3] == 3:
        x = rgb_to_y(x / 255.0) * 255.0
    return x


def _prepare(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate, crop and convert both images to batched float64 Y (or gray) on the 0-255 scale."""
    if sr.dim() != hr.dim() or sr.dim() not in (3, 4):
        raise ValueError(
            f"expected two (C, H, W) or two (N, C, H, W) tensors, got {tuple(sr.shape)} and {tuple(hr.shape)}"
        )
    for name, t in (("sr", sr), ("hr", hr)):
        if t.shape[-3] not in (1, 3):
            raise ValueError(f"{name}: expected 1 or 3 channels, got shape {tuple(t.shape)}")
        if not (t.dtype == torch.uint8 or t.is_floating_point()):
            raise ValueError(f"{name}: expected uint8 or float [0, 1], got {t.dtype}")
    batched = sr.dim() == 4
    if not batched:
        sr, hr = sr[None], hr[None]
    if sr.shape[0] != hr.shape[0] or sr.shape[-2:] != hr.shape[-2:]:
        raise DataError(
            f"SR and HR sizes differ: {tuple(sr.shape[-2:])} vs {tuple(hr.shape[-2:])} (height, width)"
            + ("" if sr.shape[0] == hr.shape[0] else f", batch {sr.shape[0]} vs {hr.shape[0]}")
        )
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    height, width = sr.shape[-2:]
    if crop_border:
        if 2 * crop_border >= min(height, width):
            raise DataError(f"image of {height}x{width} is too small for crop_border={crop_border}")
        sr = sr[..., crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[..., crop_border:-crop_border, crop_border:-crop_border]
    if sr.shape[-3] != hr.shape[-3]:  # one side gray: replicate it so both get the same Y transform
        sr, hr = sr.expand(-1, 3, -1, -1), hr.expand(-1, 3, -1, -1)
    return to_y_255(sr), to_y_255(hr), batched


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> torch.Tensor:
    """PSNR in dB (float64), per image; ``inf`` where the images are identical."""
    x, y, batched = _prepare(sr, hr, crop_border)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    psnr = 10.0 * torch.log10(255.0**2 / mse)  # mse == 0 -> +inf, as BasicSR returns float('inf')
    return psnr if batched else psnr[0]


@functools.lru_cache(maxsize=1)
def _gaussian() -> tuple[float, ...]:
    """The normalised 1-D Gaussian of OpenCV's ``getGaussianKernel(11, 1.5)``; SSIM's 2-D window is its outer
    product, applied here as two 1-D passes."""
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-offsets.square() / (2 * SSIM_SIGMA**2))
    return tuple((g / g.sum()).tolist())


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted local means over every full 11x11 window of ``x`` (M, 1, H, W).

    Each 1-D pass is a sum of 11 shifted, weighted slices rather than ``F.conv2d``: a float64 convolution with one
    channel takes torch's generic im2col path on CPU, 19x slower here (96 ms against 5 ms for the five SSIM maps
    of a B100 image, 2-core AVX2 CPU), which made SSIM ~15 % of ``srkd eval``'s time. Same sums, same weights
    (within 1e-13 of the convolution).
    """
    g = _gaussian()
    k = len(g)
    rows = x.shape[-2] - k + 1
    acc = x[..., 0:rows, :] * g[0]
    for i in range(1, k):
        acc.add_(x[..., i : i + rows, :], alpha=g[i])
    cols = x.shape[-1] - k + 1
    out = acc[..., 0:cols] * g[0]
    for i in range(1, k):
        out.add_(acc[..., i : i + cols], alpha=g[i])
    return out


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop_border: int) -> torch.Tensor:
    """SSIM (float64), per image, averaged over channels (one channel after the Y transform)."""
    x, y, batched = _prepare(sr, hr, crop_border)
    n, c, height, width = x.shape
    if min(height, width) < SSIM_WINDOW:
        raise DataError(
            f"image of {height}x{width} (after cropping {crop_border} px) is smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window"
        )
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    stats = torch.stack([x, y, x * x, y * y, x * y]).reshape(5 * n * c, 1, height, width)
    mu_x, mu_y, xx, yy, xy = _filter_valid(stats).reshape(5, n, c, height - SSIM_WINDOW + 1, -1)
    var_x, var_y, cov = xx - mu_x.square(), yy - mu_y.square(), xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    )
    ssim = ssim_map.mean(dim=(2, 3)).mean(dim=1)
    return ssim if batched else ssim[0]
