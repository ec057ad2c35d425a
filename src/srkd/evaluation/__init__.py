"""Benchmark evaluation (PSNR/SSIM on the Y channel, the papers' protocol) and tiled inference.

from srkd.evaluation import evaluate_model, upscale_image
results = evaluate_model("bicubic", ["Set5"], scale=4)   # {"Set5": {"psnr_y", "ssim_y", "n", "images"}}
"""

from __future__ import annotations

from srkd.evaluation.evaluate import check_scale, evaluate_model, load_eval_model
from srkd.evaluation.upscale import Bicubic, super_resolve, upscale_image

__all__ = ["Bicubic", "check_scale", "evaluate_model", "load_eval_model", "super_resolve", "upscale_image"]
