"""The contract between the training engine and a distillation method.

A method is a small ``nn.Module`` that owns the student, the (frozen) teacher and any auxiliary network it needs
(CSD's VGG, the data-free generator). It knows how to turn one batch into a loss; the engine owns everything
else: autocast, backward, gradient clipping, optimiser and lr schedule, EMA, DDP, checkpoints, logging.

Per step the engine calls::

    loss, logs = method.training_step(batch)      # under autocast
    loss.backward(); clip; optimizer.step()       # over method.trainable_parameters()
    logs |= method.after_optimizer_step(step)     # e.g. the data-free generator update (own optimiser)

Methods that produce their own inputs (data-free) set ``provides_batches = True`` and implement
``next_batch(batch_size)``; the engine then never builds a data loader. A method shows images (the data-free
sample grid) by returning them from ``samples(done)``; the engine's run logger writes them.

Progressive growth of the student (``method.progressive``, :mod:`srkd.distill.progressive`) is every method's:
the base class holds the :class:`~srkd.distill.progressive.Growth` and its ``begin_stage`` / ``extra_state``
hooks delegate to it, so a method overriding those hooks extends them (``super()``). A method whose loss reaches
into the student's layers sets ``Config.no_growth`` to the reason it refuses growth.

Under multi-process training the engine replaces ``method.student`` by its DistributedDataParallel (and/or
``torch.compile``) wrapper, so that ``self.student(...)`` / ``self.student_sr(...)`` in ``training_step`` are the
synchronised forward passes. Work that is not part of the student's own loss (a generator update that
backpropagates through the student, sample grids) uses :attr:`Method.raw_student`, the plain module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from srkd.config_base import StrictModel
from srkd.data.batch import Batch as Batch  # re-exported for methods written against it
from srkd.distill.progressive import Growth, ProgressiveConfig
from srkd.errors import CheckpointError
from srkd.models import run_sr
from srkd.models.taps import unwrap_model
from srkd.optim_base import NonfinitePolicy

# LR pixels x bytes per activation value that one chunk of a CPU teacher forward may hold. A teacher at a training
# batch has activations of hundreds of MB (EDSR 64f/32b x4, 32 samples at LR 48: 300 MB after its last
# upsampling), which every layer then streams from and to DRAM; in chunks they stay mostly in cache. Measured
# (2-core AVX512-BF16 EPYC, EDSR 64f/32b x4, 32 samples, no grad): bf16 autocast at LR 48 884 ms whole, 631 ms in
# chunks of 4, 667 of 2; at LR 96 5.9 s whole, 2.7 s one by one; at LR 24 flat (182 vs 177 ms); fp32 with
# AVX2 kernels forced (ONEDNN_MAX_CPU_ISA=AVX2) at LR 48 2.63 s whole, 2.04 s in chunks of 2. This budget picks those chunk sizes.
TEACHER_CHUNK_BYTES = 2 * 48 * 48 * 4


def teacher_chunk(lr: torch.Tensor) -> int:
    """How many samples of ``lr`` one CPU teacher forward takes (the whole batch on a GPU, which wants it)."""
    if lr.device.type != "cpu":
        return lr.shape[0]
    low = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in (torch.bfloat16, torch.float16)
    value_bytes = 2 if low else lr.element_size()
    return max(1, TEACHER_CHUNK_BYTES // (lr.shape[-2] * lr.shape[-1] * value_bytes))


# Keys of earlier layouts that every method's section refuses with the new spelling (a method adds its own).
MOVED = {
    "stages": "method.progressive.stages",
    "growth_init": "method.progressive.init",
    "stage_optimizer": "method.progressive.optimizer",
}


class MethodConfig(StrictModel):
    """Base of each method's config section (``method:`` in the YAML); ``name`` selects the method."""

    # Why this method cannot grow its student (a non-empty reason refuses ``progressive``).
    no_growth: ClassVar[str] = ""
    # Keys of earlier layouts: old name -> new spelling (see :meth:`upgrade` for saved configs).
    moved: ClassVar[dict[str, str]] = MOVED

    name: str = Field(description="the method: scratch, kd, fakd, csd, dukd or datafree")
    progressive: ProgressiveConfig | None = Field(
        None, description="grow the student body in len(stages) segments, e.g. {stages: [150, 850]} "
        "(null or false: the student has its full depth from the start)")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("progressive") is True:  # a recipe's own growth stays on through --set ...=true
            raise PydanticCustomError("moved", "method.progressive: true needs the growth's stages, e.g. "
                                      "method.progressive.stages=[150, 850]")
        old = [k for k in data if k in cls.moved]
        if old:
            raise PydanticCustomError("moved", "; ".join(f"method.{k} moved: use {cls.moved[k]}" for k in old))
        if data.get("progressive") is False:  # `--set method.progressive=false` keeps meaning off
            data = {**data, "progressive": None}
        return data

    @model_validator(mode="after")
    def _can_grow(self) -> MethodConfig:
        if self.progressive is not None and self.no_growth:
            raise PydanticCustomError("progressive", "method.progressive: {why}", {"why": self.no_growth})
        return self

    @classmethod
    def upgrade(cls, section: dict[str, Any]) -> dict[str, Any]:
        """A section saved by an earlier layout, spelled today (for comparing a finished run's config.yaml with
        a config of today; a user's file is refused with the new spelling instead)."""
        data = dict(section)
        stages, init, optimizer = (data.pop(k, None) for k in ("stages", "growth_init", "stage_optimizer"))
        if "progressive" in data and isinstance(data["progressive"], bool):
            grow = {"stages": stages, "init": init or "random", "optimizer": optimizer or "restart"}
            data["progressive"] = grow if data["progressive"] else None
        return data

    def check_budget(self, iterations: int) -> str | None:
        """What goes wrong when this method runs for ``iterations`` student steps, or None. Progressive growth
        (its stages are counted in iterations) checks that it fits the run."""
        return self.progressive.check_budget(iterations) if self.progressive is not None else None

    def stage_lengths(self, iterations: int) -> list[int]:
        """Iterations of each lr-schedule period of a run of ``iterations`` steps. Unless ``carry_optimizer``, the
        engine rebuilds the optimiser and restarts the schedule with each stage (progressive growth), so ``sched``
        counts within a stage."""
        return self.progressive.stage_lengths(iterations) if self.progressive is not None else [iterations]

    def carry_optimizer(self) -> bool:
        """When the student grows: keep the optimiser's state (Adam moments) of the weights that stay and one lr
        schedule over the whole run, instead of a fresh optimiser and schedule."""
        return self.progressive is not None and self.progressive.carry


def freeze(module: nn.Module) -> nn.Module:
    """Teacher discipline: eval mode (no dropout/BN updates) and no parameter gradients, ever."""
    module.eval()
    module.requires_grad_(False)
    return module


class Method(nn.Module):
    needs_teacher: ClassVar[bool] = True
    provides_batches: ClassVar[bool] = False
    # Set by the engine from train.nonfinite / train.max_skips: what a NaN/inf loss of an update the method takes
    # itself (a generator's) does, the same rule as for the student's.
    nonfinite: NonfinitePolicy = NonfinitePolicy()
    # The scales the shipped model serves, recorded in the exported model files: the run's scale unless a
    # method trains one network for several (a multi-scale data-free student) and sets its own list.
    scales: list[int]

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: MethodConfig, scale: int) -> None:
        super().__init__()
        self.student = student
        # The teacher is registered but frozen; train() on the method never flips it back to train mode.
        self.teacher = freeze(teacher) if teacher is not None else None
        self.cfg = cfg
        self.scale = scale
        self.scales = [scale]
        # Progressive growth (any method whose config asks): the run starts on the stage-0 student.
        self.growth = Growth(cfg.progressive, student) if cfg.progressive is not None else None
        if self.growth is not None:
            self.student = self.growth.start(student, self.training)

    @classmethod
    def uses_teacher(cls, cfg: MethodConfig) -> bool:
        """Whether the engine loads the config's teacher for this method. Distillation methods always need it;
        a method that has no teacher during training may still want one to start from (CSD initialises its
        slimmable network with the teacher's weights), so this depends on the method's config."""
        return cls.needs_teacher

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- helpers shared by the methods -------------------------------------------------------------------
    @property
    def raw_student(self) -> nn.Module:
        """The plain student behind the engine's DDP / ``torch.compile`` wrappers. Use it for forward passes
        that are not followed by the step's ``backward()`` (DDP expects every wrapped forward to be), and for
        its weights. Assigning a new module to ``self.student`` (progressive growth) is what changes it."""
        return unwrap_model(self.student)

    @property
    def stage(self) -> int:
        """The progressive stage the student is at (0 without growth)."""
        return self.growth.stage if self.growth is not None else 0

    def student_sr(self, lr: torch.Tensor) -> torch.Tensor:
        return run_sr(self.student, lr, self.scale)

    @torch.no_grad()
    def teacher_sr(self, lr: torch.Tensor, whole_batch: bool = False, scale: int | None = None) -> torch.Tensor:
        """Teacher output as a constant target: no graph is recorded (cheaper in time and memory).

        On the CPU the batch goes through in chunks of :func:`teacher_chunk` samples (same outputs).
        ``whole_batch`` keeps one forward, for callers whose forward hooks record one batch (FAKD's taps).
        ``scale``: for a multi-scale teacher, the scale of this batch (default: the method's)."""
        assert self.teacher is not None, "this method was built without a teacher"
        scale = scale or self.scale
        chunk = lr.shape[0] if whole_batch else teacher_chunk(lr)
        if chunk >= lr.shape[0]:
            return run_sr(self.teacher, lr, scale)
        return torch.cat([run_sr(self.teacher, part, scale) for part in lr.split(chunk)])

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

    def extract_student(self, source: nn.Module | None = None) -> nn.Module:
        """The network to validate and export, from ``source`` (the engine passes its EMA copy when EMA is on)
        or the trained student. Default: that network itself; a method that trains a bigger network than it
        ships overrides it (CSD extracts the slim student of its slimmable network)."""
        return source if source is not None else self.raw_student

    def begin_stage(self, step: int) -> bool:
        """Called by the engine before iteration ``step`` (0-based) on every rank. When the student grows
        (``method.progressive``) the new plain module replaces ``self.student`` and this returns True; the engine
        then moves it to the device, re-wraps it (DDP, compile) and rebuilds the optimiser, scheduler and EMA
        over its parameters. Without growth the student never changes."""
        if self.growth is None:
            return False
        grown = self.growth.grow(self.raw_student, step, self.training)
        if grown is None:
            return False
        self.student = grown
        return True

    def next_batch(self, batch_size: int) -> Batch:
        raise NotImplementedError(f"{type(self).__name__} does not provide its own batches")

    def samples(self, done: int) -> dict[str, torch.Tensor]:
        """Images to show after ``done`` iterations, by name: ``(C, H, W)`` floats in [0, 1] that the engine's
        run logger writes to ``run_dir/<name>/iter_XXXXXXXX.png`` (and TensorBoard) on rank 0. Default: none."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """State beyond the student/optimiser that a resume needs (the growth stage, a generator and its
        optimiser...)."""
        return {"stage": self.growth.stage} if self.growth is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`; grows the student to the saved stage (fresh weights: the engine loads the
        student's own weights after this)."""
        stage = int(state.get("stage", 0))
        if self.growth is None:
            if stage:
                raise CheckpointError(f"the checkpoint's student is at progressive stage {stage}, but this config "
                                      "has no method.progressive: continue that run with its own config")
            return
        if stage > self.growth.stage:
            self.student = self.growth.restore(self.raw_student, stage, self.training)
