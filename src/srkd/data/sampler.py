"""Training patches: aligned LR/HR crops with flips and 90-degree rotations, as a pure function of the step.

Every image is decoded once and degraded once (:func:`srkd.data.degrade.make_lr`); HR and LR then stay in memory
as ``uint8`` tensors (4x smaller than float) and a batch is a handful of slices, a stack and three ``where``s.
That keeps data loading far below a training step, with no worker processes to manage.

``batch(step)`` depends only on ``(seed, step, rank, world_size)``:

- resuming at step ``k`` replays exactly the batches an uninterrupted run would have seen (no sampler state in
  checkpoints);
- DDP needs no distributed sampler: the random draws are made for the *global* batch of
  ``batch_size * world_size`` patches and rank ``r`` takes slice ``r`` of it, so ranks never share a patch and
  the union over ranks equals a single process's batch of that global size. ``batch_size`` is per rank.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from srkd.data import registry
from srkd.data.batch import Batch
from srkd.data.benchmark import resolve_dataset
from srkd.data.degrade import load_pairs, make_lr
from srkd.data.images import quantize, read_image, to_float
from srkd.errors import DataError
from srkd.ops.color import rgb_to_y


def to_y_uint8(img: torch.Tensor) -> torch.Tensor:
    """RGB ``uint8 (3, H, W)`` -> Y ``uint8 (1, H, W)`` (MATLAB ``rgb2ycbcr`` on uint8 rounds the same way)."""
    return quantize(rgb_to_y(to_float(img)))


class PatchSampler:
    """Random aligned patches from in-memory images; see the module docstring for the determinism contract."""

    def __init__(
        self,
        hr_images: Sequence[torch.Tensor],
        scale: int,
        lr_patch: int = 48,
        batch_size: int = 16,
        colour: str = "rgb",
        augment: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        names: Sequence[str] | None = None,
        lr_images: Sequence[torch.Tensor | None] | None = None,
    ) -> None:
        if colour not in ("rgb", "y"):
            raise DataError(f"colour must be 'rgb' or 'y', not {colour!r}")
        if scale < 1 or lr_patch < 1 or batch_size < 1:
            raise DataError(f"scale, lr_patch and batch_size must be positive (got {scale}, {lr_patch}, {batch_size})")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
        self.scale, self.lr_patch, self.batch_size = scale, lr_patch, batch_size
        self.colour, self.augment, self.seed = colour, augment, seed
        self.rank, self.world_size = rank, world_size
        names = list(names) if names is not None else [f"image #{i}" for i in range(len(hr_images))]
        if len(names) != len(hr_images) or (lr_images is not None and len(lr_images) != len(hr_images)):
            raise ValueError("hr_images, names and lr_images must have the same length")
        given_lr = list(lr_images) if lr_images is not None else [None] * len(hr_images)

        hr_patch = lr_patch * scale
        self._hr: list[torch.Tensor] = []
        self._lr: list[torch.Tensor] = []
        skipped = []
        for name, hr, lr in zip(names, hr_images, given_lr):
            _, height, width = hr.shape
            if height < hr_patch or width < hr_patch:
                skipped.append(f"{name} ({width}x{height})")
                continue
            if lr is None:
                hr_c, lr = make_lr(hr, scale, name=name)
            else:  # precomputed (e.g. cached by load_training_pairs): HR is cropped to s times its size
                hr_c = hr[:, : lr.shape[1] * scale, : lr.shape[2] * scale]
                if tuple(hr_c.shape[1:]) != (lr.shape[1] * scale, lr.shape[2] * scale):
                    raise DataError(f"{name}: LR {tuple(lr.shape)} does not fit HR {tuple(hr.shape)} at x{scale}")
            if colour == "y":
                hr_c, lr = (x if x.shape[0] == 1 else to_y_uint8(x) for x in (hr_c, lr))
            elif hr_c.shape[0] != 3:
                raise DataError(f"{name}: {hr_c.shape[0]}-channel image in 'rgb' mode")
            self._hr.append(hr_c.contiguous())
            self._lr.append(lr.contiguous())
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} image(s) smaller than the {hr_patch}x{hr_patch} HR patch: "
                + ", ".join(skipped),
                stacklevel=2,
            )
        if not self._hr:
            raise DataError(
                f"no training image is at least {hr_patch}x{hr_patch} pixels (LR patch {lr_patch} at x{scale}); "
                "use larger images or a smaller lr_patch"
            )
        # numpy views of the same memory: batches are assembled without torch's thread pool (see _stack_float)
        self._hr_np = [t.numpy() for t in self._hr]
        self._lr_np = [t.numpy() for t in self._lr]
        self._lr_h = np.array([lr.shape[1] for lr in self._lr])
        self._lr_w = np.array([lr.shape[2] for lr in self._lr])

    def __len__(self) -> int:
        """Number of usable images."""
        return len(self._hr)

    def draws(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image index, LR top, LR left, dihedral op 0-7) of this rank's patches at ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, step])))
        total = self.batch_size * self.world_size
        idx = rng.integers(0, len(self._hr), total)
        top = (rng.random(total) * (self._lr_h[idx] - self.lr_patch + 1)).astype(np.int64)
        left = (rng.random(total) * (self._lr_w[idx] - self.lr_patch + 1)).astype(np.int64)
        ops = rng.integers(0, 8, total) if self.augment else np.zeros(total, dtype=np.int64)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return idx[mine], top[mine], left[mine], ops[mine]

    def batch(self, step: int) -> Batch:
        """This rank's batch at ``step``: LR ``(N, C, p, p)`` and HR ``(N, C, s*p, s*p)``, float in [0, 1]."""
        idx, top, left, ops = self.draws(step)
        p, s = self.lr_patch, self.scale
        lr = [dihedral(self._lr_np[i][:, y : y + p, x : x + p], op) for i, y, x, op in zip(idx, top, left, ops)]
        hr = [dihedral(self._hr_np[i][:, y * s : (y + p) * s, x * s : (x + p) * s], op)
              for i, y, x, op in zip(idx, top, left, ops)]
        return Batch(lr=_stack_float(lr), hr=_stack_float(hr))


def dihedral(x: np.ndarray, op: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of a ``(..., H, W)`` square patch, as a view: bit 0 flips
    left-right, bit 1 flips up-down, bit 2 transposes (BasicSR's hflip/vflip/rot90 set). LR and HR get the same
    ``op``, so the pair stays aligned."""
    if op & 1:
        x = x[..., ::-1]
    if op & 2:
        x = x[..., ::-1, :]
    return x.swapaxes(-1, -2) if op & 4 else x


def _stack_float(patches: list[np.ndarray]) -> torch.Tensor:
    """Stack uint8 views and scale to float32 [0, 1] (same rounding as ``to_float``) in two numpy passes.

    Batches are assembled in numpy on purpose: these are memory-bound copies of ~2 MB, and torch would hand them
    to its intra-op thread pool, which on a busy CPU (the training step owns the cores) costs far more in
    wake-ups than the copy itself (measured: 1 s instead of 2 ms with 2 threads on a loaded 2-core machine).
    """
    stacked = np.stack(patches)
    out = np.empty(stacked.shape, dtype=np.float32)
    np.divide(stacked, np.float32(255.0), out=out, dtype=np.float32)
    return torch.from_numpy(out)


def load_training_set(specs: Sequence[str], data_root: str | None = None) -> list[tuple[str, torch.Tensor]]:
    """``[(name, uint8 (3, H, W))]`` from folders, registered names or ``samples-train``; decoded once, in threads."""
    if isinstance(specs, str):
        specs = [specs]
    paths: list[tuple[str, Path]] = []
    for spec in specs:
        bset = resolve_dataset(spec, data_root)
        paths.extend((f"{bset.name}/{p.stem}", p) for p in bset.hr_paths)
    if not paths:
        raise DataError("no training data given")
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        images = list(pool.map(lambda item: read_image(item[1]), paths))
    return [(name, img) for (name, _), img in zip(paths, images)]


def load_training_pairs(
    specs: Sequence[str],
    scale: int,
    data_root: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """``[(name, hr uint8, lr uint8 or None)]`` for :class:`PatchSampler` (``lr_images=``), LR cached on disk.

    Making LR is the slow part of loading a large training set (MATLAB bicubic of 800 DIV2K images); the result
    is cached as PNG under ``cache_dir`` (default ``<data root>/cache/lr``, shared with evaluation) keyed by each HR file's content hash, so
    only the first run pays for it. Paired folders (``LR_bicubic/X{s}``) are used as given. ``lr`` is ``None``
    for an image smaller than the scale (the sampler skips it with the other too-small images).
    """
    if isinstance(specs, str):
        specs = [specs]
    cache = Path(cache_dir) if cache_dir is not None else registry.data_root(data_root) / "cache" / "lr"
    out: list[tuple[str, torch.Tensor, torch.Tensor | None]] = []
    for spec in specs:
        bset = resolve_dataset(spec, data_root)
        out.extend((f"{bset.name}/{n}", hr, lr) for n, hr, lr in load_pairs(bset, scale, cache, allow_small=True))
    if not out:
        raise DataError("no training data given")
    return out


def load_training_images(specs: Sequence[str], data_root: str | None = None) -> list[torch.Tensor]:
    """Decoded ``uint8`` HR images of every spec (see :func:`load_training_set` for names too)."""
    return [img for _, img in load_training_set(specs, data_root)]
