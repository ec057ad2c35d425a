"""The engine on networks the caller built: how ``srkd.distill`` trains an ``nn.Module`` it was handed.

:func:`train_modules` is :func:`srkd.engine.trainer.train` with the student and/or the teacher given as modules
(:class:`~srkd.engine.trainer.Prebuilt`), so a user's network gets exactly what ``srkd train`` gives (method,
checkpoints, resume, validation, logs) from the same loop. The caller's modules are trained and moved (to the
run's device) in place; a teacher is checked like a checkpoint teacher (same colour mode as the student and,
unless it upsamples its input itself, the run's scale).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from srkd.engine.config import TrainConfig
from srkd.engine.trainer import Prebuilt, train


def train_modules(
    cfg: TrainConfig,
    student: nn.Module | None = None,
    teacher: nn.Module | None = None,
    *,
    resume: str | None = "auto",
) -> Path:
    """:func:`srkd.engine.trainer.train` with ``student`` and/or ``teacher`` given as modules (None: built from
    ``cfg`` as usual). ``cfg.student`` / ``cfg.teacher`` still describe them for the run's ``config.yaml``."""
    return train(cfg, resume=resume, modules=Prebuilt(student, teacher))


__all__ = ["train_modules"]
