"""DUKD: data upcycling knowledge distillation (Zhang et al., NeurIPS 2023; paper Sec. 3.2-3.3).

Per batch of (LR, HR) pairs, with S the student and T the frozen teacher::

    loss = pix_weight * L1(S(lr), hr) + kd_weight * L1(S(lr), T(lr))
         + zoom_in_weight  * L1(A^-1 S(A zi), T(zi))       zi = LR-sized crops of hr            (zoom-in)
         + zoom_out_weight * L1(A^-1 S(A zo), T(zo))       zo = MATLAB-bicubic lr downscaled 1/s (zoom-out)
         [+ pix_weight * L1(S(zo), lr)]                    (zoom_out_pix, public-code variant, off by default)

``A`` is a per-sample random invertible augmentation (:mod:`srkd.distill.augment`) of the *student's* input
only; ``A^-1`` maps the student's output back before it meets the teacher's output on the un-augmented input.

Choices, and where they differ from the public code (yun224/DUKD):

- Augmentations apply to the upcycled inputs (``augment_on = [zoom_in, zoom_out]``): the paper augments "when
  training student with the upcycled data"; the public code only augments the zoom-in crops. ``main`` is
  available too (the student's original input, then the HR and KD terms see the inverted output).
- Zoom-in crops are at uniformly random positions (paper: "randomly cropping"); ``zoom_in_grid: true`` picks
  distinct tiles of the s x s grid instead, as the public code does.
- Zoom-out is on by default (the full method of the paper's Table 4); the public configs enable it only for
  EDSR/RCAN x3, and SwinIR cannot take the tiny zoomed-out input (turn it off there).
- ``zoom_out_pix`` (L1(S(lr_down), lr), weighted by pix_weight as in the public code) is not in the paper's
  Eq. 3, so it is off by default.
- All terms go into one loss and one optimiser step. The public code takes two steps per iteration without
  zeroing the gradient in between, so the HR/KD gradient is applied twice; that is a bug, not a recipe.
- The teacher runs once per distinct input under no_grad; the LR input and the zoom-in crops have the same size
  and go through the student (and the teacher) as one stacked batch.

Random draws (crop positions, augmentations) use torch's default CPU generator, which the engine checkpoints,
so resumed runs draw the same crops.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from srkd.data.batch import Batch
from srkd.distill.augment import BatchAug, sample
from srkd.distill.base import Method as MethodBase
from srkd.distill.base import MethodConfig
from srkd.errors import ConfigError
from srkd.ops.imresize import imresize

AugTarget = Literal["main", "zoom_in", "zoom_out"]


class Config(MethodConfig):
    name: Literal["dukd"] = Field("dukd", description="data upcycling KD (Zhang et al. 2023)")
    pix_weight: float = Field(
        5.0, ge=0, description="weight of L1(S(lr), hr); 5 for EDSR/SwinIR, 1-2 for RCAN"
    )
    kd_weight: float = Field(1.0, ge=0, description="weight of L1(S(lr), T(lr))")
    zoom_in: bool = Field(True, description="add the zoom-in term: LR-sized crops of the HR patch as inputs")
    zoom_in_crops: int = Field(
        1, ge=1, description="LR-sized crops of each HR patch (public code: 2 for EDSR x2)"
    )
    zoom_in_grid: bool = Field(False, description="zoom-in crops are distinct tiles of the s x s grid (public "
                               "code) instead of random positions")
    zoom_in_weight: float = Field(1.0, ge=0, description="weight of the zoom-in term")
    zoom_out: bool = Field(True, description="add the zoom-out term: the LR downscaled 1/s as input (off for SwinIR)")
    zoom_out_weight: float = Field(1.0, ge=0, description="weight of the zoom-out term")
    zoom_out_pix: bool = Field(False, description="also L1(S(zoomed-out), lr), weighted by pix_weight (public "
                               "code, not in the paper)")
    augment: bool = Field(True, description="invertible random augmentations of the student's upcycled inputs")
    augment_p: float = Field(
        0.3, ge=0, le=1, description="probability of each op (flip h, flip v, rot, invert)"
    )
    augment_on: list[AugTarget] = Field(default_factory=lambda: list[AugTarget](["zoom_in", "zoom_out"]),
                                        description="inputs augmented: main, zoom_in, zoom_out")


def random_crops(
    hr: torch.Tensor,
    size: tuple[int, int],
    n_crops: int,
    grid: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n_crops`` crops of ``size`` from every image, vectorised; output ``(N * n_crops, C, *size)``, crops of
    sample i at rows ``i * n_crops ...``. ``grid``: distinct tiles of the image's ``size``-grid instead of free
    positions."""
    n, _, big_h, big_w = hr.shape
    h, w = size
    if grid:
        rows, cols = big_h // h, big_w // w
        if n_crops > rows * cols:
            raise ConfigError(
                f"method.zoom_in_crops: {n_crops} crops do not fit in the {rows}x{cols} tile grid"
            )
        tile = torch.rand(n, rows * cols, generator=generator).argsort(dim=1)[:, :n_crops].reshape(-1)
        top, left = (tile // cols) * h, (tile % cols) * w
    else:
        top = torch.randint(0, big_h - h + 1, (n * n_crops,), generator=generator)
        left = torch.randint(0, big_w - w + 1, (n * n_crops,), generator=generator)
    dev = hr.device
    src = torch.arange(n).repeat_interleave(n_crops).to(dev)
    ys = (top[:, None] + torch.arange(h)).to(dev)  # (M, h)
    xs = (left[:, None] + torch.arange(w)).to(dev)  # (M, w)
    crops = hr.permute(0, 2, 3, 1)[src[:, None, None], ys[:, :, None], xs[:, None, :]]  # (M, h, w, C)
    return crops.permute(0, 3, 1, 2).contiguous()


class Method(MethodBase):
    cfg: Config

    def _augs(self, n: int, target: AugTarget, square: bool) -> BatchAug:
        if not (self.cfg.augment and target in self.cfg.augment_on):
            return BatchAug.identity(n)
        return sample(n, p=self.cfg.augment_p, odd_rotations=square)

    def _consistency(self, x: torch.Tensor, augs: BatchAug) -> torch.Tensor:
        """Student output on the augmented input, mapped back to the un-augmented frame."""
        return augs.invert(self.student_sr(augs.apply(x)))

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, s = self.cfg, self.scale
        lr, hr = batch.lr, batch.hr
        if hr is None:
            raise ConfigError("method 'dukd' needs paired (LR, HR) data; the batch has no HR images")
        n, _, h, w = lr.shape
        square = h == w

        # Same-size inputs (LR and zoom-in crops) share one student and one teacher forward.
        inputs, augs = [lr], self._augs(n, "main", square)
        if cfg.zoom_in:
            crops = random_crops(hr, (h, w), cfg.zoom_in_crops, cfg.zoom_in_grid)
            inputs.append(crops)
            augs = augs + self._augs(crops.shape[0], "zoom_in", square)
        stacked = torch.cat(inputs, 0) if len(inputs) > 1 else lr
        sr_s = self._consistency(stacked, augs)
        sr_t = self.teacher_sr(stacked)

        pix = self.l1(sr_s[:n], hr)
        kd = self.l1(sr_s[:n], sr_t[:n])
        loss = cfg.pix_weight * pix + cfg.kd_weight * kd
        logs = {"pix": pix.detach(), "kd": kd.detach()}
        if cfg.zoom_in:
            zi = self.l1(sr_s[n:], sr_t[n:])
            loss = loss + cfg.zoom_in_weight * zi
            logs["zoom_in"] = zi.detach()
        if cfg.zoom_out:
            lr_c = lr[..., : h // s * s, : w // s * s]  # so that S(lr_down) aligns with lr pixel for pixel
            if lr_c.shape[-1] < s or lr_c.shape[-2] < s:
                raise ConfigError(f"method.zoom_out: LR patch {h}x{w} is too small to zoom out by {s}")
            lr_down = imresize(lr_c, scale=1.0 / s).clamp(0.0, 1.0)
            zo_s = self._consistency(
                lr_down, self._augs(n, "zoom_out", lr_down.shape[-1] == lr_down.shape[-2])
            )
            zo = self.l1(zo_s, self.teacher_sr(lr_down))
            loss = loss + cfg.zoom_out_weight * zo
            logs["zoom_out"] = zo.detach()
            if cfg.zoom_out_pix:
                zo_pix = self.l1(zo_s, lr_c)
                loss = loss + cfg.pix_weight * zo_pix
                logs["zoom_out_pix"] = zo_pix.detach()
        return loss, logs


# Readable aliases; the registry uses the module-level ``Config`` and ``Method``.
DUKD, DUKDConfig = Method, Config

__all__ = ["Config", "Method", "DUKD", "DUKDConfig", "random_crops"]
