"""Benchmark evaluation with the protocol both papers report: PSNR/SSIM on the Y channel, ``crop_border = scale``.

For every image of a set: HR cropped to a multiple of the scale, LR made by MATLAB bicubic and stored as uint8 (the
degradation cache of :mod:`srkd.data.degrade`), SR computed by :func:`srkd.evaluation.upscale.super_resolve`,
rounded to uint8 exactly as a saved PNG would be, then compared with the HR on the luma. Measuring the rounded
image (not the float tensor) is what makes ``srkd eval`` agree with ``srkd metrics`` run on the saved files.

Y-channel networks (VDSR) are measured on their own luma output, rounded to 8 bits, against the HR's (unrounded)
BT.601 luma; the recombination with the bicubic chroma is only for the saved picture. Their input is the luma of
the float bicubic upscale (the VDSR authors' protocol), which puts the released MatConvNet VDSR within 0.01 dB of
its published Set5 figures (37.53 / 33.66 / 31.35). Rounding the upscale to uint8 first (``y_input="rounded"``)
reproduces an 8-bit reference pipeline instead (pytorch-vdsr Set5 37.55 / 33.72 / 31.35, the numbers in
shared/notes/calibration.md) but puts MatConvNet x4 0.10 dB under its figure. See tests/test_eval_vdsr.py.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from srkd.checkpoint.io import load_model
from srkd.data.benchmark import resolve_dataset
from srkd.data.degrade import load_pairs
from srkd.data.images import quantize, to_float, write_image
from srkd.data.registry import data_root as default_root
from srkd.errors import CheckpointError, SrkdError
from srkd.evaluation.upscale import (
    Bicubic,
    check_precision,
    inference_mode,
    resolve_device,
    super_resolve,
    tiled_super_resolve,
)
from srkd.metrics import psnr_y, ssim_y, to_y_255
from srkd.models.base import find_spec, model_scale, upsamples_input
from srkd.models.taps import unwrap_model
from srkd.precision import precision_warning

# LR images above this many pixels are tiled (bounded memory for teacher-size networks on 2K benchmarks);
# tiling changes PSNR by far less than 0.001 dB. Below it, images of one size are batched together.
AUTO_TILE_PIXELS = 640 * 480
AUTO_TILE = 256
# Same-size images share a forward up to this many LR pixels. On a GPU batching fills the device; on a CPU it only
# makes every activation bigger than the caches: EDSR-64 x4 on 120x80 inputs costs 28 % more per image at batch 32
# than at batch 1 (measured, 1 thread), so CPU batches hold one image unless the images are tiny.
BATCH_PIXELS = {"cpu": 128 * 128, "other": 4 * 320 * 240}


def load_eval_model(spec: str | Path, scale: int, device: torch.device) -> nn.Module:
    """``"bicubic"`` or a checkpoint path -> a module that super-resolves by ``scale``."""
    if str(spec).lower() == "bicubic":
        return Bicubic(scale)
    model, _meta = load_model(spec, scale=scale, device=str(device))
    check_scale(model, scale, str(spec))
    return model


def check_scale(model: nn.Module, scale: int, what: str) -> None:
    """A network that upsamples by itself must do so by ``scale``; pre-upsampling nets (VDSR) serve any scale."""
    net = unwrap_model(model)
    if not isinstance(getattr(net, "scale", None), int) or getattr(net, "colour", None) not in ("rgb", "y"):
        spec = find_spec(net)
        arch = spec.arch if spec is not None else type(net).__name__
        raise CheckpointError(f"{what}: a '{arch}' model is not a super-resolution network (no scale/colour)")
    if upsamples_input(net):
        return
    own = model_scale(net)
    if own != int(scale):
        raise CheckpointError(f"{what}: this model upscales x{own}, but --scale {scale} was asked for")


def _resolve_sets(sets: Sequence[Any], data_root: str | Path | None) -> list[Any]:
    return [resolve_dataset(str(s), data_root) if isinstance(s, (str, Path)) else s for s in sets]


_PAIRS_MEMO: OrderedDict[tuple[Any, ...], list[tuple[str, torch.Tensor, torch.Tensor]]] = OrderedDict()
_PAIRS_MEMO_SIZE = 4


def _pairs(
    bset: Any, scale: int, cache_dir: str | Path | None, data_root: str | Path | None
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``load_pairs`` with the LR cache under the data root, memoised in memory for repeated validation.

    The memo key includes every file's size and mtime, so an edited image is never served stale.
    """
    def stamp(path: Path) -> tuple[str, int, int]:
        try:
            st = path.stat()
            return (str(path), st.st_size, st.st_mtime_ns)
        except OSError:
            return (str(path), -1, -1)

    key = (bset.name, scale, str(bset.lr_dir), tuple(stamp(Path(p)) for p in bset.hr_paths))
    if key in _PAIRS_MEMO:
        _PAIRS_MEMO.move_to_end(key)
        return _PAIRS_MEMO[key]
    cache = Path(cache_dir) if cache_dir is not None else default_root(data_root) / "cache" / "lr"
    pairs = load_pairs(bset, scale, cache)
    _PAIRS_MEMO[key] = pairs
    while len(_PAIRS_MEMO) > _PAIRS_MEMO_SIZE:
        _PAIRS_MEMO.popitem(last=False)
    return pairs


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _tile_for(height: int, width: int, tile: int | None) -> int:
    """The LR tile size for an image: ``tile`` when given (0 = never), else tile only large images."""
    if tile is not None:
        return tile
    return AUTO_TILE if height * width > AUTO_TILE_PIXELS else 0


def _batches(
    pairs: list[tuple[str, torch.Tensor, torch.Tensor]], tile: int | None, device: torch.device
) -> list[tuple[list[int], int]]:
    """``(indices, tile)`` batches: images of one LR size share a batch (bounded by pixels); tiled ones go alone."""
    budget = BATCH_PIXELS["cpu" if device.type == "cpu" else "other"]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)  # insertion-ordered: file order is kept
    for i, (_name, _hr, lr) in enumerate(pairs):
        groups[tuple(lr.shape)].append(i)
    batches = []
    for (_c, h, w), idx in groups.items():
        t = _tile_for(h, w, tile)
        per = 1 if t > 0 else max(1, budget // (h * w))
        batches += [(idx[i : i + per], t) for i in range(0, len(idx), per)]
    return batches


def _progress(enabled: bool):
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    )


def evaluate_model(
    model: nn.Module | str | Path,
    sets: Sequence[Any],
    scale: int,
    *,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    self_ensemble: bool = False,
    save_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    tile: int | None = None,
    y_input: str = "float",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """PSNR/SSIM (Y channel, border ``scale``) of ``model`` on each set.

    ``model``: a module (e.g. the live student during training; its mode and device are restored), a checkpoint
    path, or ``"bicubic"``. ``sets``: :class:`~srkd.data.benchmark.BenchmarkSet` objects, registry names or HR
    folders. ``device=None`` (default) runs a module where it already is and a checkpoint on the CPU.
    ``tile``: LR tile size (0 = never tile, ``None`` = only images above :data:`AUTO_TILE_PIXELS`).
    ``save_dir``: SR images are written to ``save_dir/<set>/<name>.png``. ``cache_dir``: where LR images are
    cached (default ``<data root>/cache/lr``). ``y_input``: how Y-channel VDSR-like networks get their input
    (see :func:`~srkd.evaluation.upscale.super_resolve`).

    Returns ``{set name: {"psnr_y", "ssim_y", "n", "images": [{"name", "psnr_y", "ssim_y"}]}}``.
    """
    check_precision(precision)
    scale = int(scale)
    if scale < 1:
        raise SrkdError(f"scale must be a positive integer, got {scale}")
    if isinstance(model, nn.Module):
        dev = resolve_device(device, model)
        check_scale(model, scale, "model")
    else:
        dev = resolve_device(device)
        model = load_eval_model(model, scale, dev)
    slow = precision_warning(precision, dev, fix="evaluate in fp32")
    if slow:
        warnings.warn(slow, stacklevel=2)
    bsets = _resolve_sets(sets, data_root)
    names = _unique_names([b.name for b in bsets])
    save_root = Path(save_dir) if save_dir is not None else None

    results: dict[str, dict[str, Any]] = {}
    with _progress(progress) as bar:
        for key, bset in zip(names, bsets):
            pairs = _pairs(bset, scale, cache_dir, data_root)
            task = bar.add_task(f"{key} x{scale}", total=len(pairs))
            images: list[dict[str, Any]] = [{} for _ in pairs]
            for batch, batch_tile in _batches(pairs, tile, dev):
                hr = torch.stack([pairs[i][1] for i in batch])
                lr = torch.stack([to_float(pairs[i][2]) for i in batch])
                sr_rgb, sr_y = _run(model, lr, scale, dev, precision, self_ensemble, batch_tile, y_input)
                if sr_y is not None:  # luma against luma: the HR's float Y (1 channel is compared as is)
                    metric_sr, metric_hr = sr_y, to_y_255(hr).div_(255.0)
                else:
                    metric_sr, metric_hr = sr_rgb, hr
                psnrs = psnr_y(metric_sr, metric_hr, crop_border=scale)
                ssims = ssim_y(metric_sr, metric_hr, crop_border=scale)
                psnrs = torch.as_tensor(psnrs, dtype=torch.float64).reshape(-1)
                ssims = torch.as_tensor(ssims, dtype=torch.float64).reshape(-1)
                for j, i in enumerate(batch):
                    name = pairs[i][0]
                    images[i] = {"name": name, "psnr_y": float(psnrs[j]), "ssim_y": float(ssims[j])}
                    if save_root is not None:
                        write_image(save_root / key / f"{name}.png", sr_rgb[j])
                bar.advance(task, len(batch))
            bar.remove_task(task)
            n = len(images)
            results[key] = {
                "psnr_y": sum(im["psnr_y"] for im in images) / n,
                "ssim_y": sum(im["ssim_y"] for im in images) / n,
                "n": n,
                "images": images,
            }
    return results


def _run(
    model: nn.Module,
    lr: torch.Tensor,
    scale: int,
    dev: torch.device,
    precision: str,
    self_ensemble: bool,
    tile: int,
    y_input: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SR of a float LR batch -> (RGB uint8 batch, luma uint8 batch of a Y-channel network or None)."""
    if tile > 0:
        outs = [
            tiled_super_resolve(
                model,
                img,
                tile=tile,
                scale=scale,
                device=dev,
                precision=precision,
                self_ensemble=self_ensemble,
                out_dtype=torch.uint8,
                keep_y=True,
                y_input=y_input,
            )
            for img in lr
        ]
        ys = [o.y for o in outs]
        y_batch = torch.stack(ys) if all(y is not None for y in ys) else None  # type: ignore[arg-type]
        return torch.stack([o.rgb for o in outs]), y_batch
    with inference_mode(model, dev):
        res = super_resolve(
            model, lr.to(dev), scale=scale, precision=precision, self_ensemble=self_ensemble, y_input=y_input
        )
    rgb = quantize(res.rgb.cpu())
    y = quantize(res.y.cpu()) if res.y is not None else None
    return rgb, y


__all__ = ["AUTO_TILE_PIXELS", "check_scale", "evaluate_model", "load_eval_model"]
