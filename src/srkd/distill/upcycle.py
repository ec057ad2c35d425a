"""Data-free upcycling: DUKD's zoom-in, zoom-out and invertible augmentations applied to generated images.

No published method has tried this on SR (issue 37). DUKD (:mod:`srkd.distill.dukd`) upcycles *real* training
pairs; here the only images are the generator's, so each of its three ideas needs a data-free reading:

- **zoom-in**: DUKD cuts LR-sized tiles out of the HR patch, i.e. it shows the networks the same content one
  zoom level closer. Without HR, the closest thing is the teacher's super-resolved output of the generated batch,
  ``T(G(z))``: LR-sized crops of it (:func:`srkd.distill.dukd.random_crops`) are fed to both networks and the
  student learns the teacher on them. They are images the teacher itself made, so they show the teacher's idea of
  finer detail, the same way DUKD's tiles show real finer detail.
- **zoom-out**: as DUKD, the batch downscaled by ``1/s`` (MATLAB bicubic, clamped), student learns the teacher on it.
  DUKD's ``zoom_out_pix`` term (``S(lr_down)`` against ``lr``) is not offered: it treats ``lr`` as ground truth,
  which a generated image is not.
- **augment**: :mod:`srkd.distill.augment`'s exactly invertible per-sample compositions on the student's input
  (``A^-1 S(A x)`` against ``T(x)``). DUKD augments only the upcycled inputs; here they apply to every student input
  (the generated batch too), so the toggle means something on its own, without zoom-in or zoom-out.

Every term is the student's L_KD criterion with weight 1 (DUKD's default weights), summed into the one loss of the
student step; the generator step never sees them. Random draws (crop positions, augmentations) come from the
data-free method's own stream, so resumed runs draw the same ones. With every toggle off nothing is drawn and the
student step is exactly the one without this module.
"""

from __future__ import annotations

import torch
from pydantic import Field

from srkd.config_base import StrictModel
from srkd.distill.augment import BatchAug, sample
from srkd.distill.dukd import random_crops
from srkd.errors import ConfigError
from srkd.ops.imresize import imresize


class UpcycleConfig(StrictModel):
    """``method.upcycle`` of the data-free method: each toggle off by default (the paper's method)."""

    zoom_in: bool = Field(False, description="LR-sized crops of the teacher's output of the batch as extra inputs")
    zoom_in_crops: int = Field(1, ge=1, description="zoom-in crops per generated image")
    zoom_out: bool = Field(False, description="the batch downscaled by 1/s as extra inputs")
    augment: bool = Field(False, description="invertible per-sample augmentations of every student input")
    augment_p: float = Field(0.3, ge=0.0, le=1.0, description="probability of each augmentation op (DUKD's public "
                             "code: 0.3)")

    @property
    def active(self) -> bool:
        return self.zoom_in or self.zoom_out or self.augment


def zoom_in_inputs(teacher_sr: torch.Tensor, size: tuple[int, int], crops: int,
                   rng: torch.Generator) -> torch.Tensor:
    """``crops`` LR-sized crops of every teacher output (clamped to images in [0, 1]), detached."""
    return random_crops(teacher_sr.detach().float().clamp(0.0, 1.0), size, crops, generator=rng)


def zoom_out_input(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """``lr`` cropped to a multiple of ``scale`` and downscaled by it (MATLAB bicubic, clamped), detached."""
    h, w = lr.shape[-2:]
    if h < scale or w < scale:
        raise ConfigError(f"method.upcycle.zoom_out: a {h}x{w} batch is too small to zoom out by {scale}")
    lr_c = lr.detach()[..., : h // scale * scale, : w // scale * scale]
    return imresize(lr_c.float(), scale=1.0 / scale).clamp(0.0, 1.0)


def augmentations(n: int, square: bool, cfg: UpcycleConfig, rng: torch.Generator) -> BatchAug:
    """Per-sample augmentations of ``n`` student inputs (identity when ``cfg.augment`` is off: nothing drawn)."""
    if not cfg.augment:
        return BatchAug.identity(n)
    return sample(n, generator=rng, p=cfg.augment_p, odd_rotations=square)


__all__ = ["UpcycleConfig", "augmentations", "zoom_in_inputs", "zoom_out_input"]
