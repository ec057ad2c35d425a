"""FAKD: feature-affinity knowledge distillation (He et al., ICIP 2020)::

    loss = (1 - alpha) * L1(S(lr), hr) + alpha * L1(S(lr), T(lr))
         + feature_weight * sum_taps L1(SA(F_s), SA(F_t))

``SA(F)`` is the spatial affinity of a feature map: the cosine similarity between the channel vectors of every
pair of positions, an HW x HW matrix per sample. It does not depend on the channel count, so a 64-channel
student matches a 256-channel teacher without an adapter. Taps are the outputs of 3 equal body segments.

The feature term trains the student: its gradient reaches the student's body (the DUKD repository's FAKD
baseline wraps the term in ``torch.tensor([...])``, which detaches it; ``tests/test_fakd.py`` guards this).

Memory. A full affinity costs N * (HW)^2 floats per tap: 0.34 GB at batch 16 and LR 48 (HW = 2304), but
5.4 GB at LR 96 and tens of GB for the FAKD paper's HR-sized features. srkd bounds it twice:

- positions: when HW > ``max_positions`` (default 4096), the same random subset of positions is used for the
  teacher and the student (an unbiased estimate of the full mean);
- chunks: the affinity difference is computed a block of rows at a time, at most ``chunk_elements`` (default
  2^27) matrix entries per block, under activation checkpointing when there is more than one block, so neither
  the forward nor the backward holds more than one block. Peak extra memory per tap is then about
  3 * chunk_elements * 4 bytes = 1.6 GB; a matrix that fits in one block (batch 16 at LR 48: 8.5e7 entries)
  is computed in one pass, without the recomputation, and keeps N * P^2 floats (0.34 GB per tap) until backward.

The difference of the two affinities is one matmul, ``[f_s, f_t] @ [f_s, -f_t]^T``, instead of two matmuls and
a subtraction over the big matrix.

Affinities are computed in fp32 even under bf16 autocast: cosine similarities of near-parallel vectors lose
their differences in bf16.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn as nn
from pydantic import Field
from torch.utils.checkpoint import checkpoint

from srkd.data.batch import Batch
from srkd.distill.base import Method as MethodBase
from srkd.distill.base import MethodConfig
from srkd.errors import ConfigError
from srkd.models.taps import FeatureTaps, segment_paths

_EPS = 1e-7


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


def _block_l1_sum(left_rows: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    # [f_s, f_t]_rows @ [f_s, -f_t]^T == SA_s[rows] - SA_t[rows]
    return (left_rows @ right.transpose(1, 2)).abs().sum()


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
    left, right = torch.cat([fs, ft], 2), torch.cat([fs, -ft], 2)
    rows = max(1, chunk_elements // (n * p))
    if rows >= p:
        return _block_l1_sum(left, right) / (n * p * p)
    total = fs.new_zeros(())
    for start in range(0, p, rows):
        block = left[:, start : start + rows]
        if torch.is_grad_enabled() and left.requires_grad:
            total = total + checkpoint(_block_l1_sum, block, right, use_reentrant=False)
        else:
            total = total + _block_l1_sum(block, right)
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
