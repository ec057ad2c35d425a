"""Response knowledge distillation: ``pix_weight * L1(S, HR) + kd_weight * L1(S, T)``.

The teacher's output is a constant target computed once per batch without a graph. DUKD trains its EDSR and
SwinIR students with ``pix_weight = 5`` and RCAN with 1-2; the plain KD baseline of the papers uses 1.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from srkd.data.batch import Batch
from srkd.distill.base import Method as MethodBase
from srkd.distill.base import MethodConfig


class Config(MethodConfig):
    name: Literal["kd"] = Field("kd", description="response KD: pix_weight * L1(S, HR) + kd_weight * L1(S, T)")
    pix_weight: float = Field(1.0, ge=0.0, description="weight of L1(S(lr), hr), the HR term")
    kd_weight: float = Field(1.0, ge=0.0, description="weight of L1(S(lr), T(lr)), the teacher term")


class Method(MethodBase):
    cfg: Config

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert batch.hr is not None, "response KD needs HR targets"
        target = self.teacher_sr(batch.lr)
        sr = self.student_sr(batch.lr)
        pix = self.l1(sr, batch.hr)
        kd = self.l1(sr, target)
        loss = self.cfg.pix_weight * pix + self.cfg.kd_weight * kd
        return loss, {"pix": pix.detach(), "kd": kd.detach()}
