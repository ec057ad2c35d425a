"""Evaluation: Set5 + Set14 + B100 at x4 with an EDSR-64 (64 features, 16 blocks) model, cold start.

srkd's side is :func:`srkd.evaluation.evaluate_model` exactly as ``srkd eval`` runs it, with an empty LR cache,
so the time includes decoding the HR images and making the LR ones. The baseline is BasicSR's test loop rewritten
here: per image, OpenCV decode, BasicSR's ``imresize`` for the LR (rounded to 8 bits as a stored LR file is), a
batch-1 fp32 forward, ``tensor2img``-style rounding and BasicSR's ``calculate_psnr``/``calculate_ssim`` (Y channel,
border = scale). Both evaluate the same weights (seeded random: time does not depend on them), and their PSNRs
are reported side by side as a parity check of the whole protocol.

The sets are looked up as ``<root>/<Set>/HR``: ``--data-root``, else srkd's data root (``$SRKD_DATA``), else
``../shared/data/benchmarks`` beside the checkout (``$SRKD_SHARED``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from srkd.bench.common import (
    REPO,
    BenchOptions,
    basicsr_reference,
    comparison,
    fmt_s,
    ratio_text,
    resolve_bench_device,
    target,
    timed,
)
from srkd.data.images import list_images
from srkd.data.registry import data_root as srkd_root
from srkd.data.samples import export_samples
from srkd.errors import DataError, SrkdError
from srkd.evaluation import evaluate_model
from srkd.models import build_model, model_spec

SETS = ("Set5", "Set14", "B100")


def find_sets(data_root: str | None, names: tuple[str, ...] = SETS) -> list[Path]:
    """HR folders of ``names``; a DataError names the folders that were tried."""
    shared = Path(os.environ.get("SRKD_SHARED", REPO.parent / "shared")) / "data" / "benchmarks"
    roots = [Path(data_root)] if data_root else [srkd_root(), shared]
    for root in roots:
        folders = [root / name / "HR" for name in names]
        if all(f.is_dir() for f in folders):
            return folders
    tried = ", ".join(str(r) for r in roots)
    raise DataError(f"eval benchmark: {'/'.join(names)} HR folders not found under {tried} (use --data-root DIR)")


def basicsr_style_eval(
    model: nn.Module, folders: list[Path], scale: int, ref: Any, device: torch.device | None = None
) -> dict[str, float]:
    """Mean PSNR-Y per set, computed the way BasicSR's test script does (see the module docstring)."""
    import cv2  # inside: optional dependency (dev extra), only for the BasicSR-style baseline

    means = {}
    device = device or torch.device("cpu")
    model.eval().to(device)
    for folder in folders:
        psnrs = []
        for path in list_images(folder):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SrkdError(f"{path}: OpenCV cannot decode this image")
            gt = bgr.astype(np.float32) / 255.0  # BGR, HWC
            h, w = gt.shape[:2]
            gt = gt[: h - h % scale, : w - w % scale]
            lq = np.clip(np.round(ref.imresize(gt, 1 / scale) * 255.0), 0, 255).astype(np.float32) / 255.0
            x = torch.from_numpy(np.ascontiguousarray(lq[:, :, ::-1].transpose(2, 0, 1)))[None].to(device)
            with torch.no_grad():
                out = model(x)
            sr = out[0].clamp(0, 1).cpu().numpy().transpose(1, 2, 0)[:, :, ::-1]
            sr_img = np.round(sr * 255.0).astype(np.uint8)
            gt_img = np.round(gt * 255.0).astype(np.uint8)
            psnrs.append(ref.calculate_psnr(sr_img, gt_img, crop_border=scale, test_y_channel=True))
            ref.calculate_ssim(sr_img, gt_img, crop_border=scale, test_y_channel=True)
        means[folder.parent.name] = float(np.mean(psnrs))
    return means


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    ref = basicsr_reference()
    precision = opts.extra.get("precision") or "fp32"
    scale = 4
    if opts.quick:
        tmp_sets = tempfile.TemporaryDirectory(prefix="srkd-bench-sets-")
        folder = Path(tmp_sets.name) / "samples" / "HR"
        export_samples(folder, "val")
        folders = [folder]
        torch.manual_seed(0)
        model = build_model("edsr", scale=scale, n_feats=8, n_resblocks=2)
    else:
        folders = find_sets(opts.data_root)
        torch.manual_seed(0)
        model = build_model("edsr", scale=scale, n_feats=64, n_resblocks=16)
    model.eval()
    n_images = {f.parent.name: len(list(f.iterdir())) for f in folders}

    # One run each (a cold evaluation is the number a user sees); baseline first, then srkd with empty caches.
    base_psnr, t_base = timed(lambda: basicsr_style_eval(model, folders, scale, ref, device))
    model.cpu()
    with tempfile.TemporaryDirectory(prefix="srkd-bench-lr-") as cache:
        res, t_ours = timed(lambda: evaluate_model(model, [str(f) for f in folders], scale, device=device,
                                                   precision=precision, cache_dir=cache, progress=False))
    ours_psnr = {f.parent.name: res[name]["psnr_y"] for f, name in zip(folders, res)}
    if opts.quick:
        tmp_sets.cleanup()

    row = comparison("eval x4", t_base, t_ours,
                     baseline_label="BasicSR-style test loop: per image, numpy imresize LR, fp32 batch 1",
                     ours_label=f"srkd evaluate_model ({precision}, cold LR cache)")
    return {
        "config": {
            "model": {"arch": "edsr", "n_feats": model_spec(model).kwargs["n_feats"],
                      "n_resblocks": model_spec(model).kwargs["n_resblocks"], "weights": "seeded random"},
            "scale": scale,
            "sets": n_images,
            "precision": precision,
            "device": str(device),
        },
        "comparisons": [row],
        "metrics": {
            "psnr_y_srkd": ours_psnr,
            "psnr_y_basicsr_style": base_psnr,
            "max_abs_psnr_diff_db": max(abs(ours_psnr[k] - base_psnr[k]) for k in ours_psnr),
        },
        "targets": [target("eval Set5+Set14+B100 x4 time (s)", t_ours["median_s"], "<=", 60.0,
                           cpu_value=t_ours["median_cpu_s"])] if not opts.quick else [],
    }


def describe(result: dict[str, Any]) -> list[str]:
    r = result["comparisons"][0]
    m = result["metrics"]
    sets = ", ".join(f"{k} {v:.2f}" for k, v in m["psnr_y_srkd"].items())
    return [
        f"{'+'.join(result['config']['sets'])} x4: BasicSR-style {fmt_s(r['baseline']['median_s'])}, "
        f"srkd {fmt_s(r['ours']['median_s'])} -> {ratio_text(r, 1)}",
        f"PSNR-Y srkd: {sets} dB (random weights); max |srkd - BasicSR-style| = {m['max_abs_psnr_diff_db']:.4f} dB",
    ]
