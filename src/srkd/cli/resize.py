"""``srkd resize IN OUT --scale F``: MATLAB-compatible bicubic resize of one image (or every image of a folder).

The result is what MATLAB's ``imresize(img, F)`` writes for a ``uint8`` image: bicubic, antialiased when shrinking,
size ``ceil(H * F) x ceil(W * F)``, rounded half away from zero. Grayscale files stay grayscale. ``F`` may be written
as a fraction (``1/3``): ``0.333`` is a different scale (another kernel width, possibly another output size).
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

from srkd.config_base import clip
from srkd.errors import SrkdError


def parse_scale(text: str) -> float:
    """``"4"``, ``"0.25"`` or ``"1/3"`` -> a positive float."""
    shown = clip(text, 40)  # the message never echoes a pasted megabyte
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise SrkdError(f"--scale: {shown!r} is not a number or fraction (e.g. 4, 0.25, 1/3)") from None
    if not 0 < value < float("inf"):
        raise SrkdError(f"--scale: must be positive and finite, got {shown}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="an image file, or a folder of images")
    parser.add_argument("output", metavar="OUT", help="output file (format from its suffix), or a folder")
    parser.add_argument("--scale", required=True, metavar="F", help="factor: 4 enlarges, 0.25 or 1/4 shrinks")
    parser.add_argument(
        "--no-antialias",
        action="store_true",
        help="plain cubic kernel when shrinking (MATLAB's 'Antialiasing', false)",
    )


def run(args: argparse.Namespace) -> int:
    from srkd.data.images import check_output_pixels, is_image_file, list_images, read_image, write_image
    from srkd.ops.imresize import imresize, output_size

    scale = parse_scale(args.scale)
    src, dst = Path(args.input), Path(args.output)
    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            raise SrkdError(f"{dst}: exists and is not a folder (a folder input needs an output folder)")
        pairs = [(path, dst / path.name) for path in list_images(src)]
    else:
        if not src.exists():
            raise SrkdError(f"{src}: no such file or folder")
        pairs = [(src, dst / src.name if dst.is_dir() else dst)]
        if not dst.is_dir() and not is_image_file(dst):
            raise SrkdError(
                f"{dst}: unknown image format '{dst.suffix}' (use .png, .bmp, .tif, .jpg or .webp)"
            )
    for path, out in pairs:
        if out.resolve() == path.resolve():
            raise SrkdError(f"{out}: would overwrite its own input; choose another output")

    for path, out in pairs:
        img = read_image(path, mode="unchanged")
        height, width = img.shape[-2:]
        new_h, new_w = output_size(height, scale), output_size(width, scale)
        check_output_pixels(new_h, new_w, f"{path} ({width}x{height} x {args.scale})")
        try:
            resized = imresize(img, scale=scale, antialias=not args.no_antialias)
        except ValueError as exc:  # a scale that shrinks a side below one pixel
            raise SrkdError(f"{path}: {exc}") from None
        write_image(out, resized)
        print(f"{path} ({width}x{height}) -> {out} ({new_w}x{new_h})")
    return 0
