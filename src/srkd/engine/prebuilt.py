"""The engine on networks the caller built: how ``srkd.distill`` trains an ``nn.Module`` it was handed.

:func:`srkd.engine.trainer.train` builds the student and the teacher from the config (``build_student`` /
``build_teacher``) at one point of its setup, after seeding and before the method, data and run folder are made.
:func:`train_modules` runs that same loop with those two steps answered by modules the caller already holds, so
a user's network gets exactly what ``srkd train`` gives (method, checkpoints, resume, validation, logs) with no
second copy of the loop. It does so by standing in for the two builders for the duration of the call (one call
at a time, under a lock), which leaves ``trainer.py`` untouched; if the trainer ever stops building its student
through ``build_student``, the run fails loudly here instead of training a network the caller never sees.

The caller's modules are trained and moved (to the run's device) in place. The teacher is checked like a
checkpoint teacher: same colour mode as the student and, unless it upsamples its input itself, the run's scale.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import torch.nn as nn

from srkd.engine import trainer
from srkd.engine.config import TrainConfig
from srkd.errors import ConfigError

_LOCK = threading.Lock()


def check_teacher(teacher: nn.Module, student: nn.Module, scale: int) -> None:
    """The checks ``build_teacher`` makes on a loaded teacher, for one handed over as a module."""
    s_colour, t_colour = getattr(student, "colour", "rgb"), getattr(teacher, "colour", "rgb")
    if s_colour != t_colour:
        raise ConfigError(f"the teacher works on {t_colour.upper()} images but the student on {s_colour.upper()}")
    t_scale = getattr(teacher, "scale", scale)
    if not getattr(teacher, "upsample_input", False) and int(t_scale) != scale:
        raise ConfigError(f"the teacher upscales x{t_scale} but the run's scale is x{scale}")


@contextlib.contextmanager
def _builders(student: nn.Module | None, teacher: nn.Module | None, used: dict[str, bool]) -> Iterator[None]:
    saved = trainer.build_student, trainer.build_teacher

    def build_student(cfg: TrainConfig) -> nn.Module:
        used["student"] = True
        return student if student is not None else saved[0](cfg)

    def build_teacher(cfg: TrainConfig, built: nn.Module) -> nn.Module | None:
        if teacher is None:
            return saved[1](cfg, built)
        used["teacher"] = True
        check_teacher(teacher, built, cfg.scale)
        return teacher

    trainer.build_student, trainer.build_teacher = build_student, build_teacher  # type: ignore[assignment]
    try:
        yield
    finally:
        trainer.build_student, trainer.build_teacher = saved


def train_modules(
    cfg: TrainConfig,
    student: nn.Module | None = None,
    teacher: nn.Module | None = None,
    *,
    resume: str | None = "auto",
) -> Path:
    """:func:`srkd.engine.trainer.train` with ``student`` and/or ``teacher`` given as modules (None: built from
    ``cfg`` as usual). ``cfg.student`` / ``cfg.teacher`` still describe them for the run's ``config.yaml``."""
    used = {"student": False, "teacher": False}
    with _LOCK, _builders(student, teacher, used):
        run_dir = trainer.train(cfg, resume=resume)
    if student is not None and not used["student"]:
        raise RuntimeError("srkd.engine.trainer no longer builds its student through build_student()")
    return run_dir


__all__ = ["check_teacher", "train_modules"]
