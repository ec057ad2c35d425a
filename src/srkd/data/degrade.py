"""The degradation both papers use, and cached LR/HR pairs for evaluation.

``make_lr`` is the whole degradation model: crop the HR image at the top-left to a multiple of the scale, MATLAB
bicubic (antialiased) by ``1/s``, round to ``uint8`` as a stored PNG is. Benchmark LR images are cached as PNG
under ``<cache_dir>/<set>/X<s>/`` with the HR file's content hash in the name, so an edited HR image never
meets a stale LR.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, overload

import torch

from srkd.data.benchmark import BenchmarkSet
from srkd.data.images import read_image, write_image
from srkd.errors import DataError
from srkd.ops.imresize import imresize

# Bump when the degradation changes, so old caches are ignored rather than reused.
DEGRADATION_VERSION = "matlab-bicubic-v1"


def make_lr(hr: torch.Tensor, scale: int, name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hr_cropped, lr)``, both ``uint8 (C, H, W)``: HR cropped to a multiple of ``scale``, LR = its bicubic 1/s."""
    label = name or "image"
    if hr.dtype != torch.uint8 or hr.ndim != 3:
        raise DataError(f"{label}: expected a uint8 (C, H, W) image, got {tuple(hr.shape)} {hr.dtype}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise DataError(f"{label}: scale must be a positive integer, got {scale!r}")
    _, height, width = hr.shape
    if height < scale or width < scale:
        raise DataError(f"{label}: image is {width}x{height}, smaller than the scale x{scale}")
    hr = hr[:, : height - height % scale, : width - width % scale]
    if scale == 1:
        return hr, hr.clone()
    lr = imresize(hr, scale=1.0 / scale)
    expected = (hr.shape[0], hr.shape[1] // scale, hr.shape[2] // scale)
    if lr.dtype != torch.uint8 or tuple(lr.shape) != expected:  # guards the contract with srkd.ops.imresize
        raise RuntimeError(f"imresize returned {tuple(lr.shape)} {lr.dtype}, expected {expected} uint8")
    return hr, lr


def lr_path_for(lr_dir: Path, hr_path: Path, scale: int) -> Path | None:
    """EDSR naming: ``HR/baby.png`` <-> ``LR_bicubic/X2/babyx2.png`` (any image extension)."""
    folder = lr_dir / f"X{scale}"
    for ext in (hr_path.suffix, ".png", ".bmp", ".jpg", ".tif"):
        candidate = folder / f"{hr_path.stem}x{scale}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _cache_key(hr_path: Path, scale: int) -> str:
    h = hashlib.sha256(f"{DEGRADATION_VERSION}|x{scale}|".encode())
    with open(hr_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _cached_lr(hr: torch.Tensor, hr_path: Path, scale: int, cache: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    if cache is None:
        return make_lr(hr, scale, name=str(hr_path))
    file = cache / f"{hr_path.stem}-{_cache_key(hr_path, scale)}.png"
    hr_c = hr[:, : hr.shape[1] - hr.shape[1] % scale, : hr.shape[2] - hr.shape[2] % scale]
    if file.is_file():
        try:
            lr = read_image(file, mode="unchanged")
            if tuple(lr.shape) == (hr.shape[0], hr_c.shape[1] // scale, hr_c.shape[2] // scale):
                return hr_c, lr
        except DataError:
            pass  # a damaged cache entry is recomputed
    hr_c, lr = make_lr(hr, scale, name=str(hr_path))
    try:
        for stale in cache.glob(f"{hr_path.stem}-*.png"):
            stale.unlink(missing_ok=True)
        write_image(file, lr)
    except (DataError, OSError) as exc:
        warnings.warn(f"LR cache not written ({exc}); continuing without it", stacklevel=3)
    return hr_c, lr


def _pair(
    hr_path: Path, scale: int, paired_dir: Path | None, cache: Path | None, allow_small: bool
) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    hr = read_image(hr_path)
    if paired_dir is not None:
        lr_path = lr_path_for(paired_dir.parent, hr_path, scale)
        if lr_path is None:
            raise DataError(f"{hr_path}: no LR image {hr_path.stem}x{scale}.* in {paired_dir}")
        lr = read_image(lr_path)
        _, h, w = lr.shape
        if not (hr.shape[1] // scale == h and hr.shape[2] // scale == w):
            raise DataError(
                f"{lr_path}: LR is {w}x{h} but HR {hr_path.name} is {hr.shape[2]}x{hr.shape[1]}; "
                f"at x{scale} the LR must be {hr.shape[2] // scale}x{hr.shape[1] // scale}"
            )
        return hr_path.stem, hr[:, : h * scale, : w * scale], lr
    if allow_small and min(hr.shape[1:]) < scale:
        return hr_path.stem, hr, None
    hr_c, lr = _cached_lr(hr, hr_path, scale, cache)
    return hr_path.stem, hr_c, lr


@overload
def load_pairs(
    bset: BenchmarkSet, scale: int, cache_dir: Path | None = None, *, workers: int | None = None,
    allow_small: Literal[False] = False,
) -> list[tuple[str, torch.Tensor, torch.Tensor]]: ...


@overload
def load_pairs(
    bset: BenchmarkSet, scale: int, cache_dir: Path | None = None, *, workers: int | None = None,
    allow_small: bool,
) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]: ...


def load_pairs(
    bset: BenchmarkSet,
    scale: int,
    cache_dir: Path | None = None,
    *,
    workers: int | None = None,
    allow_small: bool = False,
) -> list[tuple[str, torch.Tensor, torch.Tensor]] | list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """``[(name, hr uint8 cropped, lr uint8)]`` for a benchmark set, in file-name order.

    Where the set ships LR images for this scale (EDSR ``LR_bicubic/X{s}``) they are used as given and the HR
    image is cropped to ``s`` times their size; a size that does not fit is a :class:`DataError`. Otherwise the
    LR images are made with :func:`make_lr` and cached under ``cache_dir/<set>/X<s>/`` when given. Images are
    decoded and degraded in a few threads (PIL and torch release the GIL). ``allow_small`` (training sets)
    returns ``lr=None`` for an image smaller than the scale instead of raising.
    """
    paired_dir = bset.lr_dir / f"X{scale}" if bset.lr_dir is not None else None
    if paired_dir is not None and not paired_dir.is_dir():
        paired_dir = None  # the set has no LR for this scale: make it
    cache = None if cache_dir is None or paired_dir is not None else Path(cache_dir) / bset.name / f"X{scale}"
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: _pair(p, scale, paired_dir, cache, allow_small), bset.hr_paths))
