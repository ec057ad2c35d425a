"""``srkd eval``: PSNR/SSIM (Y channel, border = scale) of a checkpoint or bicubic on benchmark sets."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from srkd.cli.output import add_device_option, add_json_option, emit_json, pick_device, to_stdout
from srkd.errors import SrkdError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, metavar="SPEC", help="an srkd checkpoint (.safetensors) or 'bicubic'"
    )
    parser.add_argument("--scale", required=True, type=int, help="upscaling factor (2, 3, 4...)")
    parser.add_argument(
        "--data",
        required=True,
        metavar="NAME_OR_DIR[,...]",
        help="comma-separated dataset names (Set5, Set14, B100, Urban100, Manga109, DIV2K-valid) or HR folders",
    )
    add_json_option(parser, '{"<dataset>": {"psnr_y", "ssim_y", "n"}} (with --per-image, "images" too)')
    parser.add_argument("--save-dir", metavar="DIR", help="write the SR images to DIR/<dataset>/<name>.png")
    parser.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/rotations (x8)")
    add_device_option(parser, "the model")
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast + channels_last"
    )
    parser.add_argument(
        "--data-root", metavar="DIR", help="dataset root (default: $SRKD_DATA or ~/.cache/srkd)"
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="LR tile size (0 = never; default: only large images)",
    )
    parser.add_argument(
        "--y-input",
        default="float",
        choices=["float", "rounded"],
        help="Y-channel VDSR input: luma of the float bicubic upscale (VDSR authors, default) or of its uint8 rounding",
    )
    parser.add_argument("--per-image", action="store_true", help="also print every image's PSNR/SSIM")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _specs(data: str) -> list[str]:
    specs = [s.strip() for s in data.split(",") if s.strip()]
    if not specs:
        raise SrkdError("--data: give at least one dataset name or folder")
    return specs


def print_table(results: dict[str, dict[str, Any]], scale: int, model: str, per_image: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    label = "bicubic" if model.lower() == "bicubic" else Path(model).name
    table = Table(title=f"{label} x{scale}", caption=f"PSNR/SSIM on Y (BT.601), border {scale}")
    table.add_column("dataset")
    table.add_column("images", justify="right")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    for name, res in results.items():
        if per_image:
            for im in res["images"]:
                table.add_row(f"  {im['name']}", "", f"{im['psnr_y']:.2f}", f"{im['ssim_y']:.4f}")
        table.add_row(name, str(res["n"]), f"{res['psnr_y']:.2f}", f"{res['ssim_y']:.4f}", style="bold")
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    from srkd.evaluation.evaluate import evaluate_model

    if args.scale < 1:
        raise SrkdError(f"--scale must be a positive integer, got {args.scale}")
    if args.tile is not None and args.tile < 0:
        raise SrkdError(f"--tile must be >= 0, got {args.tile}")
    specs = _specs(args.data)
    from srkd.data.benchmark import resolve_dataset

    bsets = [resolve_dataset(spec, args.data_root) for spec in specs]
    with warnings.catch_warnings(record=True) as caught:  # one line each, not Python's two-line format
        warnings.simplefilter("always")
        results = evaluate_model(
            args.model,
            bsets,
            args.scale,
            device=pick_device(args.device),
            precision=args.precision,
            self_ensemble=args.self_ensemble,
            save_dir=args.save_dir,
            data_root=args.data_root,
            tile=args.tile,
            y_input=args.y_input,
            progress=not args.quiet,
        )
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {message}", file=sys.stderr)
    # Registry names are keyed as the user typed them; folders by the set's name (".../Set5/HR" -> "Set5").
    keyed: dict[str, dict[str, Any]] = {}
    for spec, (name, res) in zip(specs, results.items()):
        key = spec if _is_registry_name(spec) else name
        keyed[key if key not in keyed else name] = res
    if not to_stdout(args):
        print_table(keyed, args.scale, str(args.model), args.per_image)
    fields = ("psnr_y", "ssim_y", "n", "images") if args.per_image else ("psnr_y", "ssim_y", "n")
    emit_json(args, {k: {f: v[f] for f in fields if f in v} for k, v in keyed.items()})
    return 0


def _is_registry_name(spec: str) -> bool:
    return not (os.sep in spec or "/" in spec or Path(spec).exists())
