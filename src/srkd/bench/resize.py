"""imresize: srkd's batched torch MATLAB-bicubic against BasicSR 1.4.2's ``imresize`` (per image, per row).

A batch of 512x512 RGB images is shrunk by 4 (512 -> 128, antialiased: how LR training and test images are made)
and a batch of 128x128 images is enlarged by 4 (128 -> 512: the bicubic input of pre-upsampling networks such as
VDSR, and the bicubic baseline). BasicSR gets each image as the HWC numpy array it expects, prepared outside the
timed region; srkd gets the whole ``(N, 3, H, W)`` batch. The largest difference between the two outputs is
reported beside the speed (the parity tests in ``tests/test_imresize.py`` hold it below 2e-5). On the CPU srkd
runs its C++ kernels when they can be built (``srkd.ops.native``), else its torch path; the result names which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from srkd.bench.common import (
    BenchOptions,
    basicsr_reference,
    comparison,
    fmt_s,
    interleaved,
    ratio_text,
    resolve_bench_device,
    speedup,
    target,
)
from srkd.ops import native
from srkd.ops.imresize import imresize


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    ref = basicsr_reference()
    n, size = (2, 64) if opts.quick else (int(opts.extra.get("images") or 8), 512)
    repeats = opts.reps(default=10, quick=2)
    gen = torch.Generator().manual_seed(0)
    big = torch.rand(n, 3, size, size, generator=gen)
    small = torch.rand(n, 3, size // 4, size // 4, generator=gen)

    rows, parity = [], {}
    for name, x, scale in (("down x1/4", big, 0.25), ("up x4", small, 4.0)):
        hwc = [np.ascontiguousarray(img.permute(1, 2, 0).numpy()) for img in x]
        x_dev = x.to(device)

        def ours(x_dev: torch.Tensor = x_dev, scale: float = scale) -> torch.Tensor:
            return imresize(x_dev, scale=scale)

        def baseline(hwc: list[np.ndarray] = hwc, scale: float = scale) -> list[np.ndarray]:
            return [ref.imresize(img, scale) for img in hwc]

        timing = interleaved({"baseline": baseline, "ours": ours}, repeats=repeats, warmup=1, device=device)
        theirs = np.stack([o.transpose(2, 0, 1) for o in baseline()])
        parity[name] = float(np.abs(ours().cpu().numpy() - theirs).max())
        out = tuple(theirs.shape[-2:])
        rows.append(comparison(
            name, timing["baseline"], timing["ours"],
            baseline_label=f"BasicSR 1.4.2 imresize, {n} images one by one",
            ours_label=f"srkd imresize, one ({n}, 3, {x.shape[-2]}, {x.shape[-1]}) batch on {device}",
            shape=f"{n}x3x{x.shape[-2]}x{x.shape[-1]} -> {n}x3x{out[0]}x{out[1]}",
        ))
    return {
        "config": {"images": n, "size": size, "repeats": repeats, "device": str(device),
                   "implementation": native.status() if device.type == "cpu" else "torch"},
        "comparisons": rows,
        "metrics": {"max_abs_diff_vs_basicsr": parity},
        "targets": [target(f"imresize {r['name']} speed-up vs BasicSR", speedup(r), ">=", 20.0, r["ratio_cpu"]) for r in rows]
        + [target(f"imresize {k} max |srkd - BasicSR|", v, "<=", 2e-5) for k, v in parity.items()],
    }


def describe(result: dict[str, Any]) -> list[str]:
    return [f"srkd implementation: {result['config'].get('implementation', 'torch')}"] + [
        f"{r['name']:>9} ({r['shape']}): BasicSR {fmt_s(r['baseline']['median_s'])}, srkd {fmt_s(r['ours']['median_s'])}"
        f" -> {ratio_text(r, 1)}; max |diff| "
        f"{result['metrics']['max_abs_diff_vs_basicsr'][r['name']]:.1e}"
        for r in result["comparisons"]
    ]
