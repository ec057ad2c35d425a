"""Training without a teacher: L1(S(LR), HR). The baseline every distillation method must beat."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from srkd.data.batch import Batch
from srkd.distill.base import Method as MethodBase
from srkd.distill.base import MethodConfig


class Config(MethodConfig):
    name: Literal["scratch"] = Field("scratch", description="no teacher: L1(S(lr), hr), the baseline")


class Method(MethodBase):
    needs_teacher = False

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert batch.hr is not None, "scratch training needs HR targets"
        loss = self.l1(self.student_sr(batch.lr), batch.hr)
        return loss, {"l1": loss.detach()}
