"""``srkd upscale``: super-resolve image files or folders with a checkpoint, tile by tile.

A bad file gets one ``error:`` line and is skipped; the others are still written (each atomically), and the exit
status is 2 at the end if anything failed, so a batch job never loses finished outputs to one broken image.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from functools import partial
from pathlib import Path

import torch

from srkd.errors import SrkdError
from srkd.precision import precision_warning


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="FILE", help="an srkd checkpoint (or 'bicubic')")
    parser.usage = "srkd upscale --model FILE [options] IN [IN ...] OUT"
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="input images or folders, then OUT: a file for a single input file, else a folder",
    )
    parser.add_argument(
        "--scale", type=int, default=None, help="for multi-scale checkpoints (VDSR): which scale"
    )
    parser.add_argument(
        "--tile", type=int, default=256, metavar="N", help="LR tile size, 0 = whole image (256)"
    )
    parser.add_argument(
        "--overlap", type=int, default=16, metavar="N", help="LR context around each tile (16)"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast + channels_last (faster on CPUs with bf16 kernels and on GPUs)"
    )
    parser.add_argument(
        "--self-ensemble", action="store_true", help="average the 8 flips/rotations (8x slower)"
    )
    from srkd.cli.output import add_device_option

    add_device_option(parser, "the model")
    parser.add_argument("--ext", default="png", help="output format for folder outputs (png)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def collect_inputs(paths: list[str]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted); a missing path is an error up front."""
    from srkd.data.images import is_image_file, list_images

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += list_images(path)
        elif path.exists():
            files.append(path)
        else:
            raise SrkdError(f"{path}: no such file or folder")
    for path in files:
        if not is_image_file(path):
            raise SrkdError(f"{path}: not an image file (expected .png, .jpg, .bmp, .tif, .webp...)")
    return files


def plan_outputs(inputs: list[Path], out: Path, raw_inputs: list[str], ext: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: OUT is a file for a single input file with an image suffix, else a folder."""
    from srkd.data.images import is_image_file

    single_file = len(raw_inputs) == 1 and not Path(raw_inputs[0]).is_dir()
    if single_file and is_image_file(out) and not out.is_dir():
        pairs = [(inputs[0], out)]
    else:
        if out.exists() and not out.is_dir():
            why = ("an output file needs an image suffix such as .png" if single_file
                   else "several inputs need an output folder")
            raise SrkdError(f"{out}: exists and is not a folder ({why})")
        suffix = "." + ext.lstrip(".")
        pairs = [(src, out / f"{src.stem}{suffix}") for src in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise SrkdError(f"{dst}: would overwrite its own input; choose another output folder")
        if dst in seen:
            raise SrkdError(f"{dst}: both {seen[dst]} and {src} would be written there (same file name)")
        seen[dst] = src
    return pairs


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srkd.cli.output import pick_device
    from srkd.data.images import check_output_pixels, read_image, write_image
    from srkd.evaluation.upscale import resolve_device, upscale_image
    from srkd.models import model_scale

    if len(args.paths) < 2:
        raise SrkdError("give at least one input and an output: srkd upscale --model FILE IN... OUT")
    if args.tile < 0 or args.overlap < 0:
        raise SrkdError("--tile and --overlap must be >= 0")
    *raw_inputs, raw_out = args.paths
    out = Path(raw_out)
    pairs = plan_outputs(collect_inputs(raw_inputs), out, raw_inputs, args.ext)
    device = resolve_device(pick_device(args.device))
    model = _load(args.model, args.scale, device)
    scale = args.scale or model_scale(model)
    precision = "bf16" if args.bf16 else "fp32"
    slow = precision_warning(precision, device, fix="leave out --bf16")
    if slow:
        print(f"warning: {slow}", file=sys.stderr)

    failed = 0
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=args.quiet,
    ) as bar:
        task = bar.add_task("upscale", total=len(pairs))
        for index, (src, dst) in enumerate(pairs):
            bar.update(task, description=src.name, completed=index)
            try:
                with warnings.catch_warnings(record=True) as caught:  # e.g. "alpha channel dropped"
                    warnings.simplefilter("always")
                    lr = read_image(src)
                for warning in caught:
                    _report(bar, f"warning: {warning.message}")
                check_output_pixels(lr.shape[-2] * scale, lr.shape[-1] * scale, src)
                sr = upscale_image(
                    model,
                    lr,
                    tile=args.tile,
                    overlap=args.overlap,
                    precision=precision,
                    device=device,
                    scale=scale,
                    self_ensemble=args.self_ensemble,
                    out_dtype=torch.uint8,
                    progress=partial(_advance, bar, task, index),
                )
                write_image(dst, sr)
            except SrkdError as exc:
                failed += 1
                _report(bar, f"error: {exc}")
            except (RuntimeError, MemoryError) as exc:  # out of memory on a huge image: try a smaller --tile
                failed += 1
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                _report(bar, f"error: {src}: {first} (try a smaller --tile)")
        bar.update(task, completed=len(pairs))
    done = len(pairs) - failed
    print(
        f"wrote {done} of {len(pairs)} image(s) to {out}" + (f"; {failed} failed" if failed else ""),
        file=sys.stderr,
    )
    return 2 if failed else 0


def _advance(bar, task, index: int, done: int, total: int) -> None:
    """Progress within image ``index``: its tiles done out of ``total``."""
    bar.update(task, completed=index + done / total)


def _report(bar, line: str) -> None:
    """One unwrapped, unstyled line on stderr, printed above the live progress bar."""
    bar.console.print(line, markup=False, highlight=False, soft_wrap=True)


def _load(spec: str, scale: int | None, device: torch.device) -> torch.nn.Module:
    """Checkpoint -> model; without --scale, a single-scale checkpoint's own scale is used."""
    from srkd.evaluation.evaluate import check_scale
    from srkd.evaluation.upscale import Bicubic

    if str(spec).lower() == "bicubic":
        if scale is None:
            raise SrkdError("--model bicubic needs --scale")
        return Bicubic(scale)
    from srkd.checkpoint.io import load_model

    model, _meta = load_model(spec, scale=scale, device=str(device))
    if scale is not None:
        check_scale(model, scale, spec)
    return model
