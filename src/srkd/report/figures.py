"""The papers' figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot``: figures are plain :class:`matplotlib.figure.Figure` objects, so drawing never touches a global
backend or opens a window (it works on a headless server and from threads), and nothing leaks between calls.

- :func:`visual_comparison`: crops of several SR results beside the HR with the crop's PSNR under each
  (DFSR Fig. 2/5, DUKD Fig. 6); the crop is picked where the bicubic result is worst unless given.
- :func:`loss_curves`: every loss term of one or more runs' ``log.jsonl`` and their validation PSNR.
- :func:`line_plot`, :func:`bar_pairs`: the w_R sweep (DFSR Fig. 4), student-teacher agreement (DUKD Fig. 5)
  and PSNR gain vs parameters (DUKD Fig. 4).
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from srkd.engine.logging import read_log
from srkd.metrics import psnr_y, to_y_255

Box = tuple[int, int, int, int]  # top, left, height, width (pixels of the HR image)

# Keys of a train record that are bookkeeping, not loss terms.
NOT_TERMS = {"type", "step", "lr", "it_s", "skipped", "grad_norm", "grad_norm_max", "time"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # inside: matplotlib is slow to import; only figures need it

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def to_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def to_display(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) uint8 or float [0, 1] -> (H, W, 3) or (H, W) uint8 for ``imshow``."""
    x = img.detach().cpu()
    if x.is_floating_point():
        x = (x.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
    arr = x.numpy()
    return arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))


def _luma(img: torch.Tensor) -> torch.Tensor:
    return to_y_255(img.detach().cpu())  # (..., 1, H, W) float64 0-255


def auto_crop(reference: torch.Tensor, hr: torch.Tensor, size: int | None = None) -> Box:
    """The ``size`` x ``size`` window where ``reference`` (e.g. bicubic) is furthest from ``hr`` (mean |dY|).

    That is where super-resolution has the most to recover: edges and texture, as the papers' crops show.
    Default size: a quarter of the shorter side, between 16 and 160 pixels.
    """
    h, w = hr.shape[-2:]
    if size is None:
        size = int(min(max(min(h, w) // 4, 16), 160))
    size = int(min(size, h, w))
    err = (_luma(reference) - _luma(hr)).abs().float().reshape(1, 1, h, w)
    stride = max(1, size // 8)
    mean = F.avg_pool2d(err, size, stride=stride)
    idx = int(mean.flatten().argmax())
    top, left = divmod(idx, mean.shape[-1])
    return top * stride, left * stride, size, size


def _crop(img: torch.Tensor, box: Box) -> torch.Tensor:
    top, left, h, w = box
    return img[..., top : top + h, left : left + w]


def crop_psnr(img: torch.Tensor, hr: torch.Tensor, box: Box) -> float:
    """Y-channel PSNR of a crop (no border: the crop is the region of interest, as in DUKD Fig. 6)."""
    return float(psnr_y(_crop(img, box), _crop(hr, box), crop_border=0))


def visual_comparison(
    images: Mapping[str, torch.Tensor],
    hr: torch.Tensor,
    crop: Box | None = None,
    *,
    crop_size: int | None = None,
    title: str | None = None,
) -> bytes:
    """PNG: the HR image with the crop outlined, then the crop of every SR result with its PSNR (dB, Y) under it.

    ``images``: name -> SR result (C, H, W), uint8 or float in [0, 1], the size of ``hr``. ``crop``: (top, left,
    height, width) in HR pixels; ``None`` picks the window where the "bicubic" entry (else the first) is worst.
    """
    if not images:
        raise ValueError("visual_comparison needs at least one image")
    for name, img in images.items():
        if tuple(img.shape[-2:]) != tuple(hr.shape[-2:]):
            raise ValueError(f"{name}: size {tuple(img.shape[-2:])} differs from the HR's {tuple(hr.shape[-2:])}")
    if crop is None:
        ref = next((v for k, v in images.items() if k.lower() == "bicubic"), next(iter(images.values())))
        crop = auto_crop(ref, hr, crop_size)
    panels = [(name, img, f"{crop_psnr(img, hr, crop):.2f} dB") for name, img in images.items()]
    panels.append(("HR", hr, "PSNR (dB)"))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    h, w = hr.shape[-2:]
    full_w = 2.6 * rows * w / max(h, 1)
    fig = _figure(min(full_w, 8.0) + 2.3 * cols, 2.6 * rows + (0.4 if title else 0))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[min(full_w, 8.0) / 2.3] + [1] * cols)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(to_display(hr), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    from matplotlib.patches import Rectangle  # inside: matplotlib is slow to import; only figures need it

    top, left, ch, cw = crop
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), cw, ch, fill=False, edgecolor="red", linewidth=1.5))
    ax.set_axis_off()
    for i, (name, img, text) in enumerate(panels):
        sub = fig.add_subplot(grid[i // cols, 1 + i % cols])
        sub.imshow(to_display(_crop(img, crop)), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_xlabel(f"{name}\n{text}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return to_png(fig)


def loss_curves(jsonl_paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> bytes:
    """PNG: one panel per loss term (every numeric key of the ``train`` records), one line per run, plus a panel
    of validation PSNR per set when the logs hold ``val`` records. A resumed run's repeated steps keep the last."""
    labels = list(labels) if labels is not None else [Path(p).parent.name for p in jsonl_paths]
    if len(labels) != len(jsonl_paths):
        raise ValueError(f"{len(jsonl_paths)} logs but {len(labels)} labels")
    runs: list[tuple[str, dict[str, dict[int, float]], dict[str, dict[int, float]]]] = []
    terms: dict[str, None] = {}
    for path, label in zip(jsonl_paths, labels):
        train: dict[str, dict[int, float]] = {}
        val: dict[str, dict[int, float]] = {}
        for rec in read_log(path):
            step = rec.get("step")
            if not isinstance(step, (int, float)):
                continue
            if rec.get("type") == "train":
                for k, v in rec.items():
                    if k not in NOT_TERMS and isinstance(v, (int, float)) and not isinstance(v, bool):
                        train.setdefault(k, {})[int(step)] = float(v)
                        terms[k] = None
            elif rec.get("type") == "val" and isinstance(rec.get("psnr_y"), (int, float)):
                val.setdefault(str(rec.get("set", "val")), {})[int(step)] = float(rec["psnr_y"])
        runs.append((label, train, val))
    names = list(terms)[:8]
    has_val = any(val for _l, _t, val in runs)
    n = len(names) + int(has_val)
    if n == 0:
        raise ValueError("no train or val records in " + ", ".join(str(p) for p in jsonl_paths))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(4.2 * cols, 3.0 * rows)
    # One colour per run in every panel (a panel only draws the runs that log its term, so matplotlib's own
    # colour cycle would give the same run different colours from panel to panel).
    from matplotlib import colormaps  # inside: matplotlib is slow to import; only figures need it
    from matplotlib.lines import Line2D  # inside: as above

    palette = [f"C{i}" for i in range(10)] if len(runs) <= 10 else [colormaps["tab20"](i % 20) for i in range(len(runs))]
    colour = {label: palette[i] for i, (label, _t, _v) in enumerate(runs)}
    for i, term in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        positive = True
        for label, train, _val in runs:
            series = train.get(term)
            if series:
                xs = sorted(series)
                ys = [series[x] for x in xs]
                positive &= min(ys) > 0
                ax.plot(xs, ys, label=label, linewidth=1.2, color=colour[label])
        if positive:
            ax.set_yscale("log")
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    if len(runs) > 1:  # one legend for the whole figure: every run, whichever panels it appears in
        handles = [Line2D([], [], color=colour[label], linewidth=1.5) for label, _t, _v in runs]
        fig.legend(handles, [label for label, _t, _v in runs], loc="outside lower center", ncol=min(len(runs), 5),
                   fontsize=8, frameon=False)
    if has_val:
        ax = fig.add_subplot(rows, cols, n)
        for label, _train, val in runs:
            for set_name, series in val.items():
                xs = sorted(series)
                ax.plot(xs, [series[x] for x in xs], marker="o", markersize=3, linewidth=1.2,
                        color=colour[label], label=f"{label} {set_name}" if len(runs) > 1 else set_name)
        ax.set_title("validation PSNR (dB, Y)", fontsize=10)
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    return to_png(fig)


def line_plot(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    annotations: Mapping[str, Sequence[str]] | None = None,
    hline: float | None = None,
) -> bytes:
    """PNG of one marked line per series of (x, y) points; ``annotations`` label each point of a series."""
    fig = _figure(5.5, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in series.items():
        pts = sorted(points)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", label=name)
        notes = (annotations or {}).get(name)
        if notes:
            order = sorted(range(len(points)), key=lambda i: points[i])
            for (x, y), i in zip(pts, order):
                ax.annotate(notes[i], (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    if hline is not None:
        ax.axhline(hline, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return to_png(fig)


def bar_pairs(
    groups: Sequence[str], bars: Mapping[str, Sequence[float]], *, ylabel: str, title: str = ""
) -> bytes:
    """PNG of grouped bars: one group per entry of ``groups``, one bar per key of ``bars`` (values per group)."""
    fig = _figure(max(4.5, 1.2 * len(groups) + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    k = len(bars)
    width = 0.8 / max(k, 1)
    x = np.arange(len(groups))
    lows = []
    for j, (name, values) in enumerate(bars.items()):
        vals = [float(v) for v in values]
        lows += [v for v in vals if math.isfinite(v)]
        rect = ax.bar(x + (j - (k - 1) / 2) * width, vals, width, label=name)
        ax.bar_label(rect, fmt="%.2f", fontsize=7)
    if lows:  # PSNRs differ by tenths of a dB: start the axis near the data, not at zero
        lo, hi = min(lows), max(lows)
        ax.set_ylim(lo - 0.15 * (hi - lo + 1.0), hi + 0.1 * (hi - lo + 1.0))
    ax.set_xticks(x, groups, fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def labelled_images(images: Sequence[tuple[str, torch.Tensor]], *, title: str = "") -> bytes:
    """PNG of images stacked top to bottom, each under its label, at their own pixel size (no resampling).

    For comparing whole pictures that share a layout, such as the data-free sample grids of runs that differ in
    one switch (DFSR Fig. 3, one row per fidelity mode): the same codes, side by side, show what each objective
    made of them."""
    if not images:
        raise ValueError("labelled_images needs at least one image")
    width = max(int(img.shape[-1]) for _, img in images)
    heights = [int(img.shape[-2]) for _, img in images]
    inches = 1.0 / 100  # the figure's dpi: one image pixel is one figure pixel
    fig = _figure(width * inches + 0.4, sum(heights) * inches + 0.35 * len(images) + (0.3 if title else 0.1))
    axes = fig.subplots(len(images), 1, squeeze=False, height_ratios=heights)
    for ax, (label, img) in zip(axes[:, 0], images):
        shown = to_display(img)
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_axis_off()
    if title:  # wrapped to the pictures' width (about 6 pixels a character at this size)
        fig.suptitle(textwrap.fill(title, max(20, width // 6)), fontsize=9)
    return to_png(fig)


__all__ = [
    "Box",
    "auto_crop",
    "bar_pairs",
    "crop_psnr",
    "labelled_images",
    "line_plot",
    "loss_curves",
    "to_display",
    "to_png",
    "visual_comparison",
]
