"""RGB <-> YCbCr with MATLAB's ``rgb2ycbcr`` coefficients (ITU-R BT.601, "studio swing" Y in 16-235).

SR papers report PSNR/SSIM on this Y channel and VDSR-style models work on it, so the exact coefficients matter:
OpenCV's and PIL's YCbCr are the JPEG (full-range) variant and shift PSNR by about 1.3 dB. All functions take
float tensors in [0, 1] shaped ``(..., 3, H, W)`` (channel dimension third from the end) and return the same
scale: Y in [16/255, 235/255], Cb/Cr in [16/255, 240/255]. They are differentiable and keep dtype and device.
The inverse uses the exact inverse matrix (not rounded constants), so ``ycbcr_to_rgb(rgb_to_ycbcr(x)) == x`` up to
floating-point error.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "rgb_to_y"]

# Rows: Y, Cb, Cr; columns: R, G, B; for R, G, B in [0, 1] and results on the 0-255 scale (MATLAB's table).
_RGB_TO_YCBCR = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_OFFSET = (16.0, 128.0, 128.0)


@functools.lru_cache(maxsize=16)
def _constants(inverse: bool, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(3x3 matrix, offset) mapping [0, 1] inputs to [0, 1] outputs, built in float64 then cast."""
    matrix = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64) / 255.0
    offset = torch.tensor(_OFFSET, dtype=torch.float64) / 255.0
    if inverse:  # rgb = M^-1 (ycbcr - offset)
        matrix = torch.linalg.inv(matrix)
        offset = -(matrix @ offset)
    return matrix.to(device=device, dtype=dtype), offset.to(device=device, dtype=dtype)


def _check(x: torch.Tensor, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name}: expected (..., 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name}: expected a float tensor in [0, 1], got {x.dtype} (use srkd.data.images.to_float)"
        )


def _apply(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    matrix, offset = _constants(inverse, x.dtype, str(x.device))
    return torch.einsum("oc,...chw->...ohw", matrix, x) + offset.view(3, 1, 1)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB -> YCbCr (MATLAB ``rgb2ycbcr`` on doubles in [0, 1])."""
    _check(x, "rgb_to_ycbcr")
    return _apply(x, inverse=False)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """YCbCr -> RGB, the exact inverse of :func:`rgb_to_ycbcr` (not clamped: out-of-gamut values stay visible)."""
    _check(x, "ycbcr_to_rgb")
    return _apply(x, inverse=True)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """The Y channel only, shaped ``(..., 1, H, W)``."""
    _check(x, "rgb_to_y")
    matrix, offset = _constants(False, x.dtype, str(x.device))
    return torch.einsum("c,...chw->...hw", matrix[0], x).unsqueeze(-3) + offset[0]
