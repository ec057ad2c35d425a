"""``srkd export CHECKPOINT --onnx OUT.onnx [--dynamic] [--fp16] [--opset N] [--torchscript OUT.pt]``.

The exported graph is the network: float RGB in [0, 1], ``(N, 3, h, w)`` -> ``(N, 3, s*h, s*w)`` (VDSR: the
bicubic-upscaled Y channel in, the same size out). Each written file is run once on random and real inputs
(onnxruntime for ONNX) and compared with PyTorch; a difference above 1e-4 is an error, above 1/255 for an
``--fp16`` graph (float16 weights, input and output, compared with the float32 network). ONNX files carry the
scale, colour, value range, img_range, architecture and srkd version in their metadata (``metadata_props``).
"""

from __future__ import annotations

import argparse
import importlib.util

from srkd.cli.output import add_json_option, emit_json, to_stdout
from srkd.errors import SrkdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="an srkd model checkpoint (.safetensors)")
    parser.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX model")
    parser.add_argument("--torchscript", metavar="OUT.pt", help="write a TorchScript (traced) model")
    parser.add_argument("--dynamic", action="store_true", help="ONNX: free batch, height and width")
    parser.add_argument("--fp16", action="store_true",
                        help="ONNX: float16 weights, input and output (checked against the float32 network within "
                        "1/255, one 8-bit level, instead of 1e-4)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument("--input", default="64x64", metavar="HxW",
                        help="example (and, without --dynamic, fixed) network input size (default 64x64)")
    parser.add_argument("--scale", type=int, default=None, help="multi-scale checkpoints (VDSR): which scale")
    parser.add_argument("--dynamo", action="store_true", help="ONNX via torch.export (no SwinIR) instead of tracing")
    parser.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    add_json_option(parser, "what was written and how it matched PyTorch")


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise SrkdError(f"--input '{text}': expected HxW with positive integers, e.g. 64x64")
    return int(parts[0]), int(parts[1])


def run(args: argparse.Namespace) -> int:
    if not args.onnx and not args.torchscript:
        raise SrkdError("nothing to export: give --onnx OUT.onnx and/or --torchscript OUT.pt")
    if args.opset is not None and not 9 <= args.opset <= 23:
        raise SrkdError(f"--opset {args.opset}: choose an ONNX opset between 9 and 23 (default 17)")
    if args.dynamic and not args.onnx:
        raise SrkdError("--dynamic applies to --onnx (TorchScript traces always accept any size)")
    if args.fp16 and not args.onnx:
        raise SrkdError("--fp16 applies to --onnx")
    size = parse_size(args.input)

    from srkd import export

    model, meta = export.load_for_export(args.checkpoint, scale=args.scale)
    what = f"{meta['arch']} x{meta['scale']}"
    jobs = []
    if args.onnx:
        export.export_onnx(model, args.onnx, dynamic=args.dynamic, opset=args.opset or export.DEFAULT_OPSET,
                           size=size, dynamo=args.dynamo, fp16=args.fp16)
        jobs.append(("onnx", args.onnx, args.dynamic))
    if args.torchscript:
        export.export_torchscript(model, args.torchscript, size=size)
        jobs.append(("torchscript", args.torchscript, True))
    say = (lambda *_: None) if to_stdout(args) else print
    results = []
    for fmt, path, dynamic in jobs:
        precision = ", float16" if fmt == "onnx" and args.fp16 else ""
        line = f"wrote {path} ({fmt}{precision}, {what}, input {'any size' if dynamic else 'x'.join(map(str, size))})"
        record: dict = {"format": fmt, "path": str(path), "dynamic": dynamic, "fp16": fmt == "onnx" and args.fp16,
                        "arch": meta["arch"], "scale": meta["scale"], "checked": False}
        results.append(record)
        if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
            line += "; no metadata written: the onnx package is not installed (pip install 'srkd[onnx]')"
        if args.no_check:
            say(line)
            continue
        if fmt == "onnx" and importlib.util.find_spec("onnxruntime") is None:
            say(line + "; not checked: onnxruntime is not installed (pip install 'srkd[onnx]')")
            continue
        tolerance = export.FP16_TOLERANCE if fmt == "onnx" and args.fp16 else export.TOLERANCE
        rows = export.check_export(model, path, fmt, export.check_inputs(model, size, dynamic), tolerance)
        worst = max(r["max_abs_diff"] for r in rows)
        record.update(checked=True, max_abs_diff=worst, tolerance=tolerance, checks=rows)
        shapes = ", ".join(dict.fromkeys("x".join(map(str, r["shape"])) for r in rows))  # random + real per shape
        say(f"{line}; matches PyTorch on random and real images of {shapes} (max |diff| {worst:.1e})")
    emit_json(args, {"checkpoint": str(args.checkpoint), "exports": results})
    return 0
