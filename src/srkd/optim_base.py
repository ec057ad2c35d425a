"""What every optimiser of a run shares, below both the methods and the engine that drives them.

The engine optimises the student; a method may own another network with its own optimiser (the data-free
generator). Both are configured by the same types (:class:`OptimConfig`, :class:`SchedConfig`), follow the same
learning rate as a pure function of the iteration (:meth:`Schedule.lr_at`) and obey the same rule for a NaN/inf
loss (:class:`NonfinitePolicy`, from ``train.nonfinite`` / ``train.max_skips``). They live here, in the helpers'
layer, because ``srkd.distill`` may not import ``srkd.engine``: one definition, so that a generator's ``optim``
section means exactly what the student's does.

``Schedule.lr_at`` gives the values torch's MultiStepLR/StepLR compute (``lr * gamma`` once per decay, chained in
the same order), so a run is bit-identical to one driven by them, and a resumed run needs no scheduler state.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
import torch.nn as nn
from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from srkd.config_base import Milestones, StrictModel


def _betas(betas: tuple[float, float]) -> tuple[float, float]:
    if not all(0 <= b < 1 for b in betas):
        raise ValueError("Adam's betas must each be in [0, 1)")
    return betas


Betas = Annotated[tuple[float, float], AfterValidator(_betas)]


class OptimConfig(StrictModel):
    name: Literal["adam", "sgd"] = Field("adam", description="the student's optimiser: adam or sgd")
    lr: float = Field(1e-4, gt=0, allow_inf_nan=False, description="initial learning rate")
    betas: Betas = Field((0.9, 0.99), description="Adam's moment decays (beta1, beta2), each in [0, 1)")
    eps: float = Field(1e-8, gt=0, allow_inf_nan=False, description="Adam's denominator epsilon")
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False, description="L2 weight decay")
    momentum: float = Field(0.9, ge=0, allow_inf_nan=False, description="SGD momentum (sgd only)")


class SchedConfig(StrictModel):
    """Per-iteration step decay: MultiStepLR at ``milestones``, or StepLR every ``step_size`` iterations."""

    milestones: Milestones = Field([], description="iterations at which the learning rate is multiplied by "
                                   "gamma (MultiStepLR), strictly increasing")
    gamma: float = Field(0.1, gt=0, allow_inf_nan=False, description="factor applied to the learning rate at "
                         "each decay")
    step_size: int | None = Field(None, ge=1, description="decay every step_size iterations (StepLR) instead of "
                                  "at milestones")

    @model_validator(mode="after")
    def _one_kind(self) -> SchedConfig:
        if self.step_size is not None and self.milestones:
            raise PydanticCustomError(
                "sched", "give either 'milestones' (MultiStepLR) or 'step_size' (StepLR)"
            )
        return self


def build_optimizer(params: Iterable[nn.Parameter], o: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser ``o`` describes, over ``params``."""
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


@dataclass(frozen=True)
class Schedule:
    """Step decay of ``lr`` as a function of the iteration (0-based): :meth:`lr_at` is the rate it uses."""

    lr: float
    milestones: tuple[int, ...] = ()
    step_size: int | None = None
    gamma: float = 0.1
    stage_starts: tuple[int, ...] = (0,)  # where the schedule restarts (progressive stages); always starts with 0
    _decayed: list[float] = field(default_factory=list, compare=False, repr=False)  # lr after k decays

    @classmethod
    def of(cls, optim: OptimConfig, sched: SchedConfig, stage_starts: tuple[int, ...] = (0,)) -> Schedule:
        return cls(optim.lr, tuple(sched.milestones), sched.step_size, sched.gamma, stage_starts)

    @classmethod
    def from_config(cls, cfg: Any) -> Schedule:
        """The student's schedule of a training config (``srkd.engine.config.TrainConfig``, duck-typed: this
        module sits below the engine), restarting with each progressive stage unless the optimiser is carried."""
        lengths = cfg.method.stage_lengths(cfg.train.iterations)
        starts = [sum(lengths[:i]) for i in range(len(lengths))] or [0]
        return cls.of(cfg.optim, cfg.sched, tuple(starts))

    def stage_start(self, step: int) -> int:
        return self.stage_starts[bisect.bisect_right(self.stage_starts, step) - 1]

    def decays(self, step: int) -> int:
        """How many decays iteration ``step`` is past, counted within its stage."""
        local = step - self.stage_start(step)
        if self.step_size is not None:
            return local // self.step_size
        return bisect.bisect_right(self.milestones, local)

    def lr_at(self, step: int) -> float:
        k, values = self.decays(step), self._decayed
        if not values:
            values.append(self.lr)
        while len(values) <= k:  # torch's chained form: group["lr"] * gamma at each decay (not lr * gamma ** k)
            values.append(values[-1] * self.gamma)
        return values[k]

    def as_record(self) -> dict[str, Any]:
        """What a training checkpoint records of the schedule (compared with the config on resume)."""
        return {"lr": self.lr, "milestones": list(self.milestones), "step_size": self.step_size, "gamma": self.gamma}


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class NonfinitePolicy:
    """What a NaN/inf loss does to an update, whoever's optimiser takes it (``train.nonfinite``,
    ``train.max_skips``): stop the run, or skip the update while fewer than ``max_skips`` were skipped."""

    mode: Literal["stop", "skip"] = "stop"
    max_skips: int = 100

    def skips(self, skipped: int) -> bool:
        """True: skip this update (``skipped`` were skipped before it); False: the run must stop."""
        return self.mode == "skip" and skipped < self.max_skips


__all__ = ["NonfinitePolicy", "OptimConfig", "SchedConfig", "Schedule", "build_optimizer", "set_lr"]
