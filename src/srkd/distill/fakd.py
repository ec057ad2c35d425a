"""FAKD: feature-affinity knowledge distillation (He et al., ICIP 2020)::

    loss = (1 - alpha) * L1(S(lr), hr) + alpha * L1(S(lr), T(lr))
         + feature_weight * sum_taps L1(SA(F_s), SA(F_t))

``SA(F)`` is the spatial affinity of a feature map: the cosine similarity between the channel vectors of every
pair of positions, an HW x HW matrix per sample. It does not depend on the channel count, so a 64-channel
student matches a 256-channel teacher without an adapter. Taps are the outputs of 3 equal body segments.

The feature term trains the student: its gradient reaches the student's body (the DUKD repository's FAKD
baseline wraps the term in ``torch.tensor([...])``, which detaches it; ``tests/test_fakd.py`` guards this).

Memory and speed. A full affinity costs N * (HW)^2 floats per tap: 0.34 GB at batch 16 and LR 48 (HW = 2304),
but 5.4 GB at LR 96 and tens of GB for the FAKD paper's HR-sized features. srkd never keeps it:

- positions: when HW > ``max_positions`` (default 4096), the same random subset of positions is used for the
  teacher and the student (an unbiased estimate of the full mean);
- slabs: the difference D = SA_s - SA_t is computed a slab of rows at a time, at most ``chunk_elements``
  (default 2^27) entries per slab, and the gradient 2 sign(D) F_s is accumulated from each slab while it is at
  hand (a custom autograd function), so autograd keeps an (N, HW, C_s) gradient instead of the matrix and the
  backward is one multiplication; peak extra memory per tap is one slab (0.5 GB at most by default);
- symmetry: D is symmetric, so each slab covers only the columns from its first row on and counts the part
  right of its diagonal block twice (at least :data:`MIN_SLABS` slabs: 3/4 of the products with two).

The difference of the two affinities is one matmul, ``[f_s, f_t] @ [f_s, -f_t]^T``, instead of two matmuls and
a subtraction over the big matrix. Measured (2-core AVX512-BF16 EPYC, one tap, batch 16, LR 48, 16 -> 64
channels, forward + backward, alternating, medians of 6, with a training run beside it): 1624 ms before
(one bmm kept for autograd's backward: sgn, then two bmms over the whole [f_s, f_t] width) -> 718 ms.

Affinities are computed in fp32 even under bf16 autocast: cosine similarities of near-parallel vectors lose
their differences in bf16.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field
from torch.autograd.function import once_differentiable

from srkd.data.batch import Batch
from srkd.distill.base import Method as MethodBase
from srkd.distill.base import MethodConfig
from srkd.errors import ConfigError
from srkd.models.taps import FeatureTaps, segment_paths

_EPS = 1e-7
MIN_SLABS = 2  # symmetry: 2 slabs compute 3/4 of the affinity products (measured faster than 3 or 4)


class Config(MethodConfig):
    no_growth: ClassVar[str] = "FAKD taps fixed blocks of the student's body, which growth rebuilds; remove it"
    name: Literal["fakd"] = Field("fakd", description="feature-affinity KD (Wang et al. 2020)")
    alpha: float = Field(0.5, ge=0, le=1, description="share of the teacher term against the HR term")
    feature_weight: float = Field(10.0, ge=0, description="weight of the feature-affinity term")
    segments: int = Field(3, ge=1, description="taps = outputs of this many equal body segments")
    max_positions: int = Field(4096, ge=1, description="subsample spatial positions above this many")
    chunk_elements: int = Field(2**27, ge=1, description="affinity entries computed at a time (memory bound)")


def normalized_positions(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, HW, C), every position's channel vector scaled to unit length (fp32)."""
    f = feat.float().flatten(2).transpose(1, 2)
    return f / (f.norm(dim=2, keepdim=True) + _EPS)


def spatial_affinity(feat: torch.Tensor) -> torch.Tensor:
    """SA(F): (N, C, H, W) -> (N, HW, HW) cosine similarities. Reference form; the loss uses the chunked path."""
    f = normalized_positions(feat)
    return f @ f.transpose(1, 2)


def _slab_rows(n: int, p: int, chunk_elements: int) -> int:
    """Rows of the affinity difference per slab: at least :data:`MIN_SLABS` slabs (the symmetry saves (B - 1) /
    2B of the products of B slabs), fewer rows when a slab of ``n * rows * p`` entries would exceed the budget."""
    return max(1, min(math.ceil(p / MIN_SLABS), chunk_elements // (n * p)))


def _l1(x: torch.Tensor) -> torch.Tensor:
    """sum |x| in one pass, without an |x| tensor. Row by row: ``vector_norm`` over a whole tensor accumulates
    in one fp32 running sum (15 % off for 8.5e7 entries), over rows it is as exact as ``abs().sum()``."""
    return torch.linalg.vector_norm(x, 1, dim=-1).sum()


def _upper_l1(fs: torch.Tensor, ft: torch.Tensor, rows: int, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(sum |D|, d sum|D| / d fs) for D = fs fs^T - ft ft^T, one slab of rows at a time from the diagonal on.

    D is symmetric, so a slab covers only columns from its own first row on and counts the part right of its
    diagonal block twice. Its gradient is 2 sign(D) fs (the two factors of fs fs^T give the same term), which
    each slab adds while it is at hand: its rows get sign(D_slab) fs[cols], the rows right of its diagonal block
    get the transposed contribution, and the slab is dropped. Nothing of size P^2 outlives its slab."""
    n, p, _ = fs.shape
    left, right = torch.cat([fs, ft], 2), torch.cat([fs, -ft], 2)
    total = fs.new_zeros(())
    grad = torch.zeros_like(fs) if need_grad else None
    for start in range(0, p, rows):
        stop = min(p, start + rows)
        slab = torch.bmm(left[:, start:stop], right[:, start:].transpose(1, 2))  # D[start:stop, start:]
        total += 2 * _l1(slab) - _l1(slab[:, :, : stop - start])
        if grad is not None:
            slab.sign_()
            # into fresh tensors: baddbmm_ into a slice of grad falls back to one slow addmm_ per sample
            grad[:, start:stop] += torch.bmm(slab, fs[:, start:])
            if stop < p:
                grad[:, stop:] += torch.bmm(slab[:, :, stop - start :].transpose(1, 2), fs[:, start:stop])
    return total, None if grad is None else 2 * grad


class _AffinityL1Sum(torch.autograd.Function):
    """sum |fs fs^T - ft ft^T| with its gradient computed in the forward pass (:func:`_upper_l1`), so autograd
    keeps an (N, P, C) gradient instead of the (N, P, P) matrix, and the backward is one multiplication."""

    @staticmethod
    def forward(ctx: Any, fs: torch.Tensor, ft: torch.Tensor, rows: int) -> torch.Tensor:
        total, grad = _upper_l1(fs, ft, rows, bool(ctx.needs_input_grad[0]))
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (grad,) = ctx.saved_tensors
        return (None if grad is None else g * grad), None, None


def affinity_l1(
    feat_s: torch.Tensor,
    feat_t: torch.Tensor,
    max_positions: int = 4096,
    chunk_elements: int = 2**27,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """mean |SA(F_s) - SA(F_t)| with bounded memory (see module docstring). ``feat_t`` is a constant."""
    if feat_s.shape[0] != feat_t.shape[0] or feat_s.shape[2:] != feat_t.shape[2:]:
        raise ValueError(
            f"student/teacher features differ in batch or size: {tuple(feat_s.shape)} vs {tuple(feat_t.shape)}"
        )
    fs = normalized_positions(feat_s)
    ft = normalized_positions(feat_t.detach())
    n, p = fs.shape[0], fs.shape[1]
    if p > max_positions:
        keep = torch.randperm(p, generator=generator)[:max_positions].to(fs.device)
        fs, ft, p = fs[:, keep], ft[:, keep], max_positions
    rows = _slab_rows(n, p, chunk_elements)
    if torch.is_grad_enabled() and fs.requires_grad:
        total = _AffinityL1Sum.apply(fs, ft, rows)
    else:
        total = _upper_l1(fs, ft, rows, need_grad=False)[0]
    return total / (n * p * p)


class Method(MethodBase):
    cfg: Config

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: Config, scale: int) -> None:
        if teacher is None:
            raise ConfigError("method 'fakd' needs a teacher (teacher: section of the config)")
        super().__init__(student, teacher, cfg, scale)
        self.student_taps = segment_paths(student, cfg.segments)
        self.teacher_taps = segment_paths(teacher, cfg.segments)

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        assert self.teacher is not None, "FAKD needs a teacher"  # the engine refuses to build it without one
        with FeatureTaps(self.teacher, self.teacher_taps) as t_taps:
            sr_t = self.teacher_sr(batch.lr, whole_batch=True)  # the taps keep one forward's features
        with FeatureTaps(self.student, self.student_taps) as s_taps:
            sr_s = self.student_sr(batch.lr)
        logs: dict[str, torch.Tensor] = {}
        loss = sr_s.new_zeros((), dtype=torch.float32)
        if batch.hr is not None and cfg.alpha < 1:
            hr_term = self.l1(sr_s, batch.hr)
            loss = loss + (1 - cfg.alpha) * hr_term
            logs["pix"] = hr_term.detach()
        kd = self.l1(sr_s, sr_t)
        loss = loss + cfg.alpha * kd
        logs["kd"] = kd.detach()
        feat = sr_s.new_zeros((), dtype=torch.float32)
        with torch.autocast(sr_s.device.type, enabled=False):
            for ps, pt in zip(self.student_taps, self.teacher_taps):
                feat = feat + affinity_l1(
                    s_taps.features[ps], t_taps.features[pt], cfg.max_positions, cfg.chunk_elements
                )
        loss = loss + cfg.feature_weight * feat
        logs["feature"] = feat.detach()
        return loss, logs


# Readable aliases; the registry uses the module-level ``Config`` and ``Method``.
FAKD, FAKDConfig = Method, Config

__all__ = [
    "Config",
    "Method",
    "FAKD",
    "FAKDConfig",
    "affinity_l1",
    "normalized_positions",
    "spatial_affinity",
]
