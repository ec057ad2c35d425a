"""The contract between the training engine and a distillation method.

A method is a small ``nn.Module`` that owns the student, the (frozen) teacher and any auxiliary network it needs
(CSD's VGG, the data-free generator). It knows how to turn one batch into a loss; the engine owns everything
else: autocast, backward, gradient clipping, optimiser and scheduler, EMA, DDP, checkpoints, logging.

Per step the engine calls::

    loss, logs = method.training_step(batch)      # under autocast
    loss.backward(); clip; optimizer.step()       # over method.trainable_parameters()
    logs |= method.after_optimizer_step(step)     # e.g. the data-free generator update (own optimiser)

Methods that produce their own inputs (data-free) set ``provides_batches = True`` and implement
``next_batch(batch_size)``; the engine then never builds a data loader.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.config_base import StrictModel
from srkd.models import run_sr


@dataclass
class Batch:
    """Aligned training pair. ``lr``: (N, C, h, w); ``hr``: (N, C, s*h, s*w) or None (data-free); floats in [0, 1]."""

    lr: torch.Tensor
    hr: torch.Tensor | None = None

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=memory_format) if memory_format is not None else t

        return Batch(move(self.lr), move(self.hr))  # type: ignore[arg-type]


class MethodConfig(StrictModel):
    """Base of each method's config section (``method:`` in the YAML); ``name`` selects the method."""

    name: str


def freeze(module: nn.Module) -> nn.Module:
    """Teacher discipline: eval mode (no dropout/BN updates) and no parameter gradients, ever."""
    module.eval()
    module.requires_grad_(False)
    return module


class Method(nn.Module):
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    needs_teacher: ClassVar[bool] = True
    provides_batches: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: MethodConfig, scale: int) -> None:
        super().__init__()
        self.student = student
        # The teacher is registered but frozen; train() on the method never flips it back to train mode.
        self.teacher = freeze(teacher) if teacher is not None else None
        self.cfg = cfg
        self.scale = scale

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- helpers shared by the methods -------------------------------------------------------------------
    def student_sr(self, lr: torch.Tensor) -> torch.Tensor:
        return run_sr(self.student, lr, self.scale)

    @torch.no_grad()
    def teacher_sr(self, lr: torch.Tensor) -> torch.Tensor:
        """Teacher output as a constant target: no graph is recorded (cheaper in time and memory)."""
        assert self.teacher is not None, "this method was built without a teacher"
        return run_sr(self.teacher, lr, self.scale)

    @staticmethod
    def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Loss terms are computed in fp32 even under bf16 autocast: small differences matter late in training.
        return F.l1_loss(a.float(), b.float())

    # -- the contract ------------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.student.parameters() if p.requires_grad)

    def after_optimizer_step(self, step: int) -> dict[str, float]:
        return {}

    def next_batch(self, batch_size: int) -> Batch:
        raise NotImplementedError(f"{type(self).__name__} does not provide its own batches")

    def extra_state(self) -> dict[str, Any]:
        """State beyond the student/optimiser that a resume needs (generator and its optimiser...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
