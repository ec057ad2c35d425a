"""Image-quality metrics: PSNR and SSIM on the Y channel, as SR papers report them (see :mod:`.psnr_ssim`)."""

from __future__ import annotations

from srkd.metrics.psnr_ssim import psnr_y, ssim_y, to_y_255

# Longer names, as BasicSR spells them (and as the package docstring of srkd advertises).
calculate_psnr_y = psnr_y
calculate_ssim_y = ssim_y

__all__ = ["psnr_y", "ssim_y", "to_y_255", "calculate_psnr_y", "calculate_ssim_y"]
