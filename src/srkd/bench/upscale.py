"""Upscale: a 3840x2160 image x4 through ``srkd upscale``'s tiled path, with bounded memory and invisible seams.

The full-size run happens in a fresh Python process so that its peak RSS (``getrusage``) belongs to the upscale
alone: torch, the model, the 25 MB input and the 398 MB uint8 output, plus one tile's activations. An untiled
run of the whole image would need the network's activations at 15360x8640 (several GB per layer), which is
exactly what tiling avoids, so the untiled reference is a crop: on it the tiled and the whole-image outputs are
compared (PSNR on float outputs) and timed against each other (the "baseline" of this benchmark is whole-image
inference, as BasicSR's test loop does it).

The input is a mosaic of the bundled sample photos, MATLAB-bicubic resized to 960x1080 each; the model is the
EDSR 16f/32b student of the KD benchmark (seeded random weights), or ``--model CHECKPOINT``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from typing import Any

import torch

from srkd.bench.common import (
    BenchOptions,
    comparison,
    fmt_s,
    interleaved,
    peak_rss_mb,
    ratio_text,
    resolve_bench_device,
    target,
)
from srkd.checkpoint.io import load_model
from srkd.data.images import quantize
from srkd.data.samples import sample_images
from srkd.errors import SrkdError
from srkd.evaluation.upscale import inference_mode, super_resolve, upscale_image
from srkd.models import build_model
from srkd.ops.imresize import imresize

TILE, OVERLAP = 256, 16


def test_image(width: int, height: int) -> torch.Tensor:
    """uint8 (3, height, width) mosaic of the 8 bundled photos (4 x 2 grid), each resized to fill its cell."""
    cols, rows = 4, 2
    cell_w, cell_h = width // cols, height // rows
    images = [img for _, img in sample_images("all")]
    out = torch.zeros(3, height, width, dtype=torch.uint8)
    for k, img in enumerate(images[: cols * rows]):
        r, c = divmod(k, cols)
        cell = quantize(imresize(img.float() / 255.0, size=(cell_h, cell_w)))
        out[:, r * cell_h : (r + 1) * cell_h, c * cell_w : (c + 1) * cell_w] = cell
    return out


def load_bench_model(spec: str | None, quick: bool) -> torch.nn.Module:
    if spec:
        return load_model(spec)[0]
    torch.manual_seed(0)
    if quick:
        return build_model("edsr", scale=4, n_feats=4, n_resblocks=2).eval()
    return build_model("edsr", scale=4, n_feats=16, n_resblocks=32).eval()


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """The full-size run (in its own process): time and peak RSS of one tiled upscale to uint8."""
    torch.set_num_threads(int(args["threads"]))
    model = load_bench_model(args.get("model"), args["quick"])
    lr = test_image(args["width"], args["height"])
    setup_rss = peak_rss_mb()
    start, start_cpu = time.perf_counter(), time.process_time()
    out = upscale_image(model, lr, tile=args["tile"], overlap=args["overlap"], precision=args["precision"],
                        device=args["device"], out_dtype=torch.uint8)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_upscale_mb": setup_rss,
        "output_shape": list(out.shape),
        "output_mb": out.numel() / 2**20,
    }


def psnr_float(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    precision = opts.extra.get("precision") or "fp32"
    width, height = (96, 64) if opts.quick else (3840, 2160)
    tile, crop = (32, 64) if opts.quick else (TILE, 2 * TILE)
    args = {
        "width": width, "height": height, "tile": tile, "overlap": OVERLAP, "precision": precision,
        "device": str(device), "quick": opts.quick, "model": opts.extra.get("model"),
        "threads": torch.get_num_threads(),
    }
    code = "import json, sys; from srkd.bench.upscale import worker; print(json.dumps(worker(json.loads(sys.argv[1]))))"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SrkdError(f"upscale benchmark: the worker process failed: {tail}")
    full = json.loads(proc.stdout.strip().splitlines()[-1])

    # Seams: tiled vs whole-image output on a crop that holds several tiles (same tile and overlap).
    model = load_bench_model(opts.extra.get("model"), opts.quick)
    lr = test_image(width, height)
    y0, x0 = (height - crop) // 2, (width - crop) // 2
    patch = lr[:, y0 : y0 + crop, x0 : x0 + crop].float() / 255.0

    def whole() -> torch.Tensor:
        with inference_mode(model, device):
            return super_resolve(model, patch[None].to(device), precision=precision).rgb[0].clamp(0, 1).cpu()

    def tiled() -> torch.Tensor:
        return upscale_image(model, patch, tile=tile, overlap=OVERLAP, precision=precision, device=device)

    timing = interleaved({"whole": whole, "tiled": tiled}, repeats=opts.reps(default=3, quick=1), warmup=1,
                         device=device)
    seam_psnr = psnr_float(tiled(), whole())
    row = comparison(f"crop {crop}x{crop} x4", timing["whole"], timing["tiled"],
                     baseline_label="whole-image inference", ours_label=f"tiled ({tile} + {OVERLAP} overlap)")
    targets = [target("tiled vs whole-image PSNR on the crop (dB)", seam_psnr, ">=", 50.0)]
    if not opts.quick:
        targets.insert(0, target(f"peak RSS of the {width}x{height} x4 upscale (MB)", full["peak_rss_mb"], "<=", 2048.0))
    return {
        "config": {"input": f"{width}x{height}", "scale": 4, "tile": tile, "overlap": OVERLAP, "precision": precision,
                   "model": opts.extra.get("model") or "edsr 16f/32b x4 (seeded random)", "device": str(device)},
        "comparisons": [row],
        "metrics": {"full_run": full, "seam_psnr_db": seam_psnr, "crop": crop},
        "targets": targets,
    }


def describe(result: dict[str, Any]) -> list[str]:
    full = result["metrics"]["full_run"]
    r = result["comparisons"][0]
    h, w = full["output_shape"][1:]
    return [
        f"{result['config']['input']} -> {w}x{h} tiled: {fmt_s(full['seconds'])}, peak RSS {full['peak_rss_mb']:.0f} MB "
        f"(output alone {full['output_mb']:.0f} MB; {full['rss_before_upscale_mb']:.0f} MB before the upscale)",
        f"{r['name']}: tiled {fmt_s(r['ours']['median_s'])} vs whole {fmt_s(r['baseline']['median_s'])} "
        f"({ratio_text(r)}); tiled vs whole PSNR {result['metrics']['seam_psnr_db']:.1f} dB",
    ]
