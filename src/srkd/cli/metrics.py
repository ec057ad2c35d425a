"""``srkd metrics --hr PATH --sr PATH --scale S``: Y-channel PSNR/SSIM of SR images against their HR originals.

The numbers are those of BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with ``test_y_channel=True`` and
``crop_border = scale`` (see :mod:`srkd.metrics.psnr_ssim`).

Pairing. ``--hr`` and ``--sr`` are each a file or a folder. An SR file belongs to the HR image ``NAME.ext`` when its
stem is ``NAME``, or ``NAME`` followed by ``x<digits>`` or by ``_``, ``-`` or ``.`` and anything (``babyx2.png``,
``baby_x2.png``, ``baby_SR.png``, ``baby-EDSR.png`` all match ``baby.png``); the longest matching HR name wins
(``baby_2_SR`` goes to ``baby_2`` rather than ``baby``). Every HR image needs exactly one SR file: a missing or
ambiguous match is an error listing the names, since a mean over a silent subset would not be the set's score.
SR files that match no HR image are reported on stderr and skipped (result folders often hold other files).

Sizes. An HR image larger than its SR by fewer than ``scale`` pixels in each direction (HR not cropped to a multiple
of the scale) is cropped to the SR size at the top-left, as the degradation does; any other mismatch is an error.

Grayscale. By default images are read as RGB (a grayscale file is replicated to 3 channels, as OpenCV's default
read, BasicSR's test pipeline and ``srkd eval`` do), so everything is compared on the BT.601 Y.
``--gray own`` reads files unchanged instead: a grayscale pair is then compared on its own gray values (BasicSR
``calculate_psnr`` on 2-D arrays, e.g. read with ``cv2.IMREAD_UNCHANGED``), which scores about 1.3 dB lower.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from srkd.errors import SrkdError

_SUFFIX = re.compile(r"(?:[xX]\d+|[_\-.]).*")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hr", required=True, metavar="PATH", help="HR (ground-truth) image or folder")
    parser.add_argument("--sr", required=True, metavar="PATH", help="SR (restored) image or folder")
    parser.add_argument(
        "--scale", required=True, type=int, metavar="S", help="SR factor: border crop and HR crop"
    )
    parser.add_argument(
        "--crop-border",
        type=int,
        default=None,
        metavar="N",
        help="pixels ignored at each edge (default: the scale)",
    )
    parser.add_argument(
        "--gray",
        choices=["rgb", "own"],
        default="rgb",
        help="grayscale files: 'rgb' replicates "
        "them to RGB then takes Y (default), 'own' compares their own values",
    )
    from srkd.cli.output import add_json_option

    add_json_option(parser, '{"images": [{"name", "psnr_y", "ssim_y"}], "mean": {"psnr_y", "ssim_y"}}')


def _images(path: Path, what: str) -> list[Path]:
    from srkd.data.images import is_image_file, list_images

    if path.is_dir():
        return list_images(path)
    if not path.exists():
        raise SrkdError(f"--{what}: {path}: no such file or folder")
    if not is_image_file(path):
        raise SrkdError(f"--{what}: {path}: not an image file (expected .png, .jpg, .bmp, .tif, .webp...)")
    return [path]


def _owner(sr_stem: str, hr_stems: list[str]) -> str | None:
    """The HR stem an SR stem belongs to (longest match), or None."""
    best = None
    for stem in hr_stems:
        if sr_stem == stem or (sr_stem.startswith(stem) and _SUFFIX.fullmatch(sr_stem[len(stem) :])):
            if best is None or len(stem) > len(best):
                best = stem
    return best


def _names(paths: list[Path], limit: int = 8) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def pair_images(
    hr_paths: list[Path], sr_paths: list[Path], hr_is_dir: bool, sr_is_dir: bool
) -> list[tuple[str, Path, Path]]:
    """``(name, hr, sr)`` triples by the rule in the module docstring (two single files pair whatever their names)."""
    if not hr_is_dir and not sr_is_dir:
        return [(hr_paths[0].stem, hr_paths[0], sr_paths[0])]
    by_stem: dict[str, Path] = {}
    for path in hr_paths:
        if path.stem in by_stem:
            raise SrkdError(
                f"--hr: {by_stem[path.stem].name} and {path.name} have the same name; cannot pair by name"
            )
        by_stem[path.stem] = path
    matches: dict[str, list[Path]] = {stem: [] for stem in by_stem}
    unmatched: list[Path] = []
    for path in sr_paths:
        owner = _owner(path.stem, list(by_stem))
        (matches[owner] if owner is not None else unmatched).append(path)
    if not sr_is_dir:  # one SR file scored against its HR in a folder
        if unmatched:
            raise SrkdError(f"--sr: {sr_paths[0].name} matches no HR image ({_names(hr_paths)})")
        return [(stem, by_stem[stem], found[0]) for stem, found in matches.items() if found]
    missing = [by_stem[stem] for stem, found in matches.items() if not found]
    if missing:
        raise SrkdError(
            f"no SR image for {len(missing)} HR image(s): {_names(missing)} (an SR file matches HR "
            "NAME.ext when named NAME.*, NAMEx2.*, NAME_anything.* or NAME-anything.*)"
        )
    ambiguous = [f"{stem}: {_names(found)}" for stem, found in matches.items() if len(found) > 1]
    if ambiguous:
        raise SrkdError("several SR files match one HR image: " + "; ".join(ambiguous))
    if unmatched and hr_is_dir:
        print(
            f"warning: skipped {len(unmatched)} SR file(s) that match no HR image: {_names(unmatched)}",
            file=sys.stderr,
        )
    return [(stem, by_stem[stem], found[0]) for stem, found in matches.items()]


def _fit_hr(hr, sr, hr_path: Path, sr_path: Path, scale: int):
    """Crop an HR that was not cut to a multiple of the scale; reject any other size mismatch."""
    (hh, hw), (sh, sw) = hr.shape[-2:], sr.shape[-2:]
    if (hh, hw) == (sh, sw):
        return hr
    if 0 <= hh - sh < scale and 0 <= hw - sw < scale:
        return hr[..., :sh, :sw]
    raise SrkdError(
        f"size mismatch: HR {hr_path} is {hw}x{hh} but SR {sr_path} is {sw}x{sh} (width x height); "
        f"expected equal sizes or HR larger by less than the scale ({scale})"
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from srkd.cli.output import emit_json, to_stdout
    from srkd.data.images import read_image
    from srkd.metrics import psnr_y, ssim_y

    if args.scale < 1:
        raise SrkdError(f"--scale: must be a positive integer, got {args.scale}")
    crop = args.scale if args.crop_border is None else args.crop_border
    if crop < 0:
        raise SrkdError(f"--crop-border: must be >= 0, got {crop}")
    hr_root, sr_root = Path(args.hr), Path(args.sr)
    pairs = pair_images(_images(hr_root, "hr"), _images(sr_root, "sr"), hr_root.is_dir(), sr_root.is_dir())
    mode = "unchanged" if args.gray == "own" else "rgb"

    rows: list[dict[str, Any]] = []
    for name, hr_path, sr_path in pairs:
        hr, sr = read_image(hr_path, mode=mode), read_image(sr_path, mode=mode)
        hr = _fit_hr(hr, sr, hr_path, sr_path, args.scale)
        try:
            rows.append(
                {"name": name, "psnr_y": float(psnr_y(sr, hr, crop)), "ssim_y": float(ssim_y(sr, hr, crop))}
            )
        except SrkdError as exc:
            raise SrkdError(f"{sr_path}: {exc}") from None
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in ("psnr_y", "ssim_y")}

    table = Table(title=f"Y-channel PSNR / SSIM, crop_border={crop}", title_justify="left")
    table.add_column("image")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    for r in rows:
        table.add_row(r["name"], f"{r['psnr_y']:.4f}", f"{r['ssim_y']:.6f}")
    table.add_row(f"mean of {len(rows)}", f"{mean['psnr_y']:.4f}", f"{mean['ssim_y']:.6f}", style="bold")
    if not to_stdout(args):
        Console().print(table)
    # identical images have an infinite PSNR: null in the (strict) JSON
    emit_json(args, {"images": rows, "mean": mean})
    return 0
