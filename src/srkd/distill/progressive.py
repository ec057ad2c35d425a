"""Progressive growth of the student (DFSR's progressive distillation), for any method whose loss is on the
student's output: ``method.progressive: {stages: [150, 850]}``.

The student's body is split into ``P = len(stages)`` near-equal segments. Stage ``S_0`` is head + the first
segment + tail; at the end of each stage the next segment is appended, the weights learnt so far kept, until the
configured depth. Growth happens at fixed iterations (a pure function of the step), so a resumed run grows where
the uninterrupted one did; a checkpoint records the stage so that a resume rebuilds that student before loading
its weights.

Choices beyond the paper (both off by default, measured in ``benchmarks/results/datafree-growth-demo.md``):
``init: identity`` starts each stage's new blocks as identity maps (zero residual branch, Dirac kernel for
VDSR), so ``S_k`` computes what ``S_{k-1}`` did and growth does not knock the student's output down;
``optimizer: carry`` keeps the Adam moments of the weights that stay and one lr schedule over the run, instead
of a fresh optimiser and schedule per stage (the reference code's restart, whose first step moves every weight
by about the lr).

Growth rebuilds the student from its registry spec with another depth argument, so it needs an srkd
architecture with a ``body``; methods that tap or slice the student's layers (FAKD, CSD) refuse it.
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field, field_validator

from srkd.config_base import StrictModel
from srkd.errors import ConfigError, TrainingError
from srkd.models import build_model, get_class, to_channels_last
from srkd.models.base import find_spec
from srkd.models.taps import model_body, unwrap_model

# Names of the constructor argument that sets the body depth, with how many non-body layers it also counts.
DEPTH_KWARGS = ("n_resblocks", "n_layers", "n_blocks")


class ProgressiveConfig(StrictModel):
    """``method.progressive``: grow the student body in ``len(stages)`` segments (absent, null or false: off)."""

    stages: list[int] = Field(description="student iterations per stage, at least 2 stages (P = "
                              "len(stages)); the last runs to the end")
    # "random" (the paper: the new segment is new) makes the output jump at each growth; "identity" starts each
    # new block as the identity map, so S_k computes S_{k-1}.
    init: Literal["random", "identity"] = Field(
        "random", description="how a stage's new blocks start: freshly initialised, or as identity maps")
    # A fresh Adam's first step moves every weight by about the lr, which is what knocks the grown student's PSNR
    # down for a while (measured in the demo: 21-25 dB one step after growth, from 31+).
    optimizer: Literal["restart", "carry"] = Field(
        "restart", description="at each growth a fresh optimiser and schedule (the reference code), or carry the "
        "kept weights' Adam moments and one schedule over the run")

    @field_validator("stages")
    @classmethod
    def _positive(cls, stages: list[int]) -> list[int]:
        if len(stages) < 2:
            raise ValueError("progressive growth needs at least 2 stage lengths (P = len(stages))")
        if any(s < 1 for s in stages):
            raise ValueError("stage lengths must be >= 1 iteration")
        return stages

    @property
    def carry(self) -> bool:
        return self.optimizer == "carry"

    def check_budget(self, iterations: int) -> str | None:
        """Why a run of ``iterations`` steps cannot hold these stages, or None. Growth happens at fixed
        iterations: a run shorter than the stages (a recipe's train.iterations cut to fit a budget) would end on
        a shallower student than configured, and ship it without a word."""
        if sum(self.stages[:-1]) < iterations:
            return None
        hint = scaled_stages(self.stages, iterations) if iterations >= len(self.stages) else None
        return (f"method.progressive.stages {self.stages}: the student reaches its full depth at iteration "
                f"{sum(self.stages[:-1])}, but train.iterations is {iterations}, so the run would end with a "
                f"shallower student than configured; "
                + (f"scale the stages with the budget, e.g. --set \"method.progressive.stages={hint}\"" if hint
                   else "give at least one iteration per stage"))

    def stage_lengths(self, iterations: int) -> list[int]:
        """Iterations of each lr-schedule period: one per stage, unless the optimiser is carried over."""
        if self.carry:
            return [iterations]
        heads = self.stages[:-1]
        return [*heads, max(0, iterations - sum(heads))]


def scaled_stages(stages: list[int], iterations: int) -> list[int]:
    """``stages`` rescaled to a run of ``iterations`` steps, same proportions, each at least 1."""
    total = sum(stages)
    heads = [max(1, round(s * iterations / total)) for s in stages[:-1]]
    return [*heads, max(1, iterations - sum(heads))]


def body_split(n_blocks: int, segments: int) -> list[int]:
    """Body depth of each stage S_0..S_{P-1} when ``n_blocks`` are split into ``segments`` near-equal parts."""
    sizes = [n_blocks // segments + (1 if i < n_blocks % segments else 0) for i in range(segments)]
    return [sum(sizes[: i + 1]) for i in range(segments)]


class Growth:
    """The growing student of one run: which stage it is at, and how to build the student of a stage.

    A method holds one (``Method.growth``) when its config asks for it; the method's ``begin_stage`` and
    extra-state hooks delegate here, and the engine rebuilds the optimiser around each new student."""

    def __init__(self, cfg: ProgressiveConfig, student: nn.Module) -> None:
        full = unwrap_model(student)
        spec = find_spec(full)
        if spec is None or not hasattr(full, "body"):
            raise ConfigError("method.progressive needs a registry-built student with a 'body' (see srkd.models)")
        params = inspect.signature(get_class(spec.arch).__init__).parameters
        key = next((k for k in DEPTH_KWARGS if k in params), None)
        if key is None:
            raise ConfigError(f"method.progressive: student '{spec.arch}' has no depth argument "
                              f"({', '.join(DEPTH_KWARGS)})")
        segments, n_body = len(cfg.stages), len(model_body(full))
        if n_body < segments:
            raise ConfigError(f"method.progressive.stages: {segments} stages but the student body has only "
                              f"{n_body} blocks")
        if cfg.init == "identity" and not hasattr(model_body(full)[0], "identity_"):
            raise ConfigError(f"method.progressive.init 'identity': the blocks of '{spec.arch}' have no identity_()")
        depth = spec.kwargs.get(key, params[key].default)
        self.cfg = cfg
        self.arch, self.kwargs, self.key, self.offset = spec.arch, dict(spec.kwargs), key, depth - n_body
        self.stage_blocks = body_split(n_body, segments)
        self.stage_ends = [sum(cfg.stages[: i + 1]) for i in range(segments - 1)]
        self.stage = 0

    def start(self, student: nn.Module, training: bool) -> nn.Module:
        """The stage-0 student, fresh, in place of the full-depth ``student`` the run was given."""
        self.stage = 0
        return self.build(0, previous=None, like=unwrap_model(student), training=training)

    def stage_at(self, step: int) -> int:
        """Stage that iteration ``step`` (completed iterations so far) belongs to: a pure function of the step."""
        return sum(step >= end for end in self.stage_ends)

    def grow(self, student: nn.Module, step: int, training: bool) -> nn.Module | None:
        """The student of iteration ``step``'s stage, grown from ``student`` (its weights kept), or None when
        ``step`` is still in the current stage."""
        target = self.stage_at(step)
        if target == self.stage:
            return None
        return self.advance(student, target, training, keep_weights=True)

    def restore(self, student: nn.Module, stage: int, training: bool) -> nn.Module:
        """The student of a checkpoint's ``stage``, with fresh weights (a resume loads the saved ones next)."""
        return self.advance(student, stage, training, keep_weights=False)

    def advance(self, student: nn.Module, target: int, training: bool, keep_weights: bool) -> nn.Module:
        """``student`` rebuilt stage by stage up to ``target``, each stage copying the previous one's weights
        when ``keep_weights``; never backwards."""
        if target < self.stage:
            raise TrainingError(f"progressive distillation cannot go back from stage {self.stage} to {target}")
        while self.stage < target:
            self.stage += 1
            previous = student if keep_weights else None
            student = self.build(self.stage, previous=previous, like=student, training=training)
        return student

    def build(self, stage: int, previous: nn.Module | None, like: nn.Module, training: bool) -> nn.Module:
        """The student of ``stage``, on ``like``'s device and memory format, ``previous``'s weights copied in."""
        kwargs = {**self.kwargs, self.key: self.stage_blocks[stage] + self.offset}
        model = build_model(self.arch, **kwargs)
        if hasattr(like, "scale"):
            model.scale = like.scale
        if previous is not None:
            n_prev, n_now = len(model_body(previous)), len(model_body(model))
            result = model.load_state_dict(previous.state_dict(), strict=False)
            new = {k for k in result.missing_keys if not any(k.startswith(f"body.{j}.") for j in range(n_prev, n_now))}
            if result.unexpected_keys or new:
                raise TrainingError(f"progressive growth: unexpected {result.unexpected_keys}, missing {sorted(new)}")
            if self.cfg.init == "identity":
                for block in list(model_body(model))[n_prev:]:
                    block.identity_()  # type: ignore[operator]  # checked in __init__
        ref = next(like.parameters())
        model = model.to(ref.device)
        if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last) and not ref.is_contiguous():
            model = to_channels_last(model)
        model.train(training)
        return model


__all__ = ["DEPTH_KWARGS", "Growth", "ProgressiveConfig", "body_split", "scaled_stages"]
