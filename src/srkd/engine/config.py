"""The typed training config: one YAML file describes a whole run (models, method, data, optimiser, schedule).

Load it with ``load_config(TrainConfig, path, overrides)``. The ``method`` section is validated in two steps:
its ``name`` picks the method module, whose own ``Config`` then validates the rest, so a typo is reported with
the keys *that method* accepts. Every run directory keeps the resolved config (all defaults explicit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from srkd.checkpoint.io import check_model_kwargs
from srkd.config_base import StrictModel, format_validation_error
from srkd.distill import METHODS, get_method
from srkd.distill.base import MethodConfig
from srkd.errors import CheckpointError, ConfigError
from srkd.optim_base import NonfinitePolicy, OptimConfig, SchedConfig


def _model_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The bounds a checkpoint's metadata get (positive integers, finite numbers...), for a config's too: a
    negative ``n_feats`` is a one-line error naming it, not a traceback from inside torch."""
    try:
        check_model_kwargs(kwargs, "kwargs")
    except CheckpointError as exc:
        raise ValueError(str(exc).removeprefix("kwargs: ")) from None
    return kwargs


ModelKwargs = Annotated[dict[str, Any], AfterValidator(_model_kwargs)]


# A training batch's HR patches, in values (batch_size * (lr_patch * scale)^2 * 3): 2^28 is 1 GiB of float32,
# some 60x the paper recipes' batch of 16 x 192^2 patches.
MAX_BATCH_VALUES = 1 << 28
SEED_MAX = 2**63 - 2**40  # torch's seed is 64-bit and each rank adds 1_000_003 * rank


class StudentConfig(StrictModel):
    arch: str = Field(description="architecture of the student (edsr, rcan, swinir, vdsr, imdn, rfdn, bsrn, ...)")
    kwargs: ModelKwargs = Field({}, description="constructor arguments of the architecture, e.g. {n_feats: 64}")
    # Warm start from an srkd checkpoint (e.g. DUKD's x4 student starts from its x2 one): tensors whose name
    # and shape match are copied, the rest (the upsampler of another scale) keep their fresh initialisation.
    init: str | None = Field(None, description="srkd checkpoint to warm-start from: tensors of matching name and "
                             "shape are copied, the rest keep their fresh initialisation")


class TeacherConfig(StrictModel):
    """An srkd checkpoint (self-describing), optionally with ``arch`` to assert what it holds.

    ``arch`` + ``kwargs`` without ``checkpoint`` builds a randomly initialised teacher: only useful for smoke
    tests and speed measurements, and announced with a warning.
    """

    checkpoint: str | None = Field(None, description="the teacher: an srkd checkpoint, a zoo:NAME teacher "
                                   "(srkd teachers download NAME) or a path")
    arch: str | None = Field(None, description="architecture the checkpoint must hold (checked); without a "
                             "checkpoint, builds a random teacher (smoke tests only)")
    kwargs: ModelKwargs = Field({}, description="constructor arguments of a random teacher (with arch, no checkpoint)")

    @model_validator(mode="after")
    def _checkpoint_or_arch(self) -> TeacherConfig:
        if self.checkpoint is None and self.arch is None:
            raise PydanticCustomError(
                "teacher", "give 'checkpoint' (an srkd checkpoint) or 'arch' (+ 'kwargs')"
            )
        return self


class DataConfig(StrictModel):
    train: list[str] = Field([], description="training sets: registry names (T91, DIV2K; srkd data download) "
                             "or folders of HR images")
    val: list[str] = Field([], description="validation sets (Set5...) or HR folders, evaluated every "
                           "train.val_every iterations")
    data_root: str | None = Field(None, description="where registry names are looked up (default: $SRKD_DATA, "
                                  "else ~/.cache/srkd)")
    lr_patch: int = Field(48, ge=4, le=4096, description="side of the LR training patches (HR: lr_patch * scale)")
    batch_size: int = Field(16, ge=1, le=65536, description="patches per step and process (the global batch is "
                            "batch_size * world size)")
    colour: Literal["rgb", "y"] | None = Field(None, description="rgb or y (luma only); default: the student's "
                                               "colour mode")
    augment: bool = Field(True, description="random flips and 90-degree rotations of the training patches")


class TrainLoopConfig(StrictModel):
    iterations: int = Field(ge=1, le=10**12, description="student optimiser steps of the whole run")
    grad_clip: float | None = Field(None, gt=0, allow_inf_nan=False, description="clip the gradients' global "
                                    "norm to this value (none: no clipping)")
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the student weights, e.g. 0.999; the "
                              "EMA copy is validated and shipped (none: the raw weights)")
    val_every: int = Field(5000, ge=0, description="validate every N iterations (0: only at the end)")
    ckpt_every: int = Field(5000, ge=1, description="write a resumable training checkpoint every N iterations")
    keep_ckpt: int = Field(2, ge=1, description="training checkpoints kept in run_dir/ckpt (oldest deleted)")
    log_every: int = Field(100, ge=1, description="log losses and speed every N iterations")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast precision; auto: bf16 where the device runs it natively, else fp32")
    channels_last: bool = Field(False, description="NHWC memory format (faster convolutions on recent hardware)")
    compile: bool = Field(False, description="torch.compile the student")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    nonfinite: Literal["stop", "skip"] = Field("stop", description="what a NaN/inf loss or gradient does: stop "
                                               "the run, or skip that update")
    max_skips: int = Field(100, ge=0, description="with nonfinite=skip: stop after this many skipped iterations")
    tensorboard: bool = Field(True, description="write TensorBoard events (when the tensorboard package is "
                              "installed)")

    @property
    def nonfinite_policy(self) -> NonfinitePolicy:
        """The run's one rule for NaN/inf losses, which a method's own optimiser (the generator) obeys too."""
        return NonfinitePolicy(self.nonfinite, self.max_skips)


class TrainConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=128,
                      description="the run's name, also its folder: runs/<name>")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seed of every random choice (weights, patches, "
                      "augmentations)")
    scale: int = Field(ge=1, le=8, description="upscaling factor (2, 3, 4...)")
    out_dir: str | None = Field(None, description="run folder (default: runs/<name>; srkd train --out wins)")
    student: StudentConfig = Field(description="the network trained and shipped")
    teacher: TeacherConfig | None = Field(None, description="the network distilled from (none: scratch)")
    method: SerializeAsAny[MethodConfig] = Field(description="distillation method: name (scratch, kd, fakd, csd, "
                                                 "dukd, datafree) and its own settings")
    data: DataConfig = Field(DataConfig(), description="training and validation data")
    optim: OptimConfig = Field(OptimConfig(), description="the student's optimiser")
    sched: SchedConfig = Field(SchedConfig(), description="learning-rate step decay, counted in iterations")
    train: TrainLoopConfig = Field(description="the loop: length, EMA, validation, checkpoints, precision, device")

    @field_validator("method", mode="before")
    @classmethod
    def _method_config(cls, value: Any) -> Any:
        return resolve_method_config(value)

    @model_validator(mode="after")
    def _batch_fits(self) -> TrainConfig:
        values = self.data.batch_size * (self.data.lr_patch * self.scale) ** 2 * 3
        if values > MAX_BATCH_VALUES:
            raise PydanticCustomError(
                "batch", "data.batch_size {b} x data.lr_patch {p} at x{s} makes HR batches of {gib:.1f} GiB "
                "(float32); at most {limit} values: lower data.batch_size or data.lr_patch",
                {"b": self.data.batch_size, "p": self.data.lr_patch, "s": self.scale, "gib": values * 4 / 2**30,
                 "limit": MAX_BATCH_VALUES})
        return self

    @model_validator(mode="after")
    def _method_fits_the_run(self) -> TrainConfig:
        problem = self.method.check_budget(self.train.iterations)
        if problem:
            raise PydanticCustomError("budget", "{problem}", {"problem": problem})
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir if self.out_dir is not None else Path("runs") / self.name)


def resolve_method_config(value: Any) -> MethodConfig:
    """Step two of ``method`` validation: hand the section to the named method's own ``Config``."""
    if isinstance(value, MethodConfig):
        return value
    if isinstance(value, str):  # `method: kd` is short for `method: {name: kd}`
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise PydanticCustomError("method", "needs a 'name' (one of: {known})", {"known": ", ".join(METHODS)})
    name = value["name"]
    try:
        module = get_method(name)
    except ConfigError as exc:
        raise PydanticCustomError("method", "{detail}", {"detail": str(exc)}) from None
    try:
        return module.Config.model_validate(value)
    except ValidationError as exc:
        detail = format_validation_error(exc, module.Config, f"method {name!r}")
        raise PydanticCustomError("method", "{detail}", {"detail": detail}) from None


def resolved_config(saved: Any) -> Any:
    """A run folder's saved ``config.yaml`` as this version of srkd resolves it (JSON-compatible).

    A setting srkd added after the run was written is absent from its file; resolving fills in its default, so
    a finished run still compares equal to the same config today instead of being refused, or retrained, as a
    run of "another config". A file this version cannot validate (a removed or renamed key) is returned as is.
    """
    try:
        return TrainConfig.model_validate(upgraded(saved)).model_dump(mode="json")
    except (ValidationError, ConfigError):
        return saved


def upgraded(saved: Any) -> Any:
    """A saved config with the ``method`` keys of earlier layouts moved to where they live now (the data-free
    generator's and the progressive growth's flat keys): the same run, spelled today. A user's config gets
    one error line naming the new spelling instead (:class:`~srkd.distill.base.MethodConfig`)."""
    method = saved.get("method") if isinstance(saved, dict) else None
    if not isinstance(method, dict) or not isinstance(method.get("name"), str):
        return saved
    try:
        module = get_method(method["name"])
    except ConfigError:
        return saved
    return {**saved, "method": module.Config.upgrade(method)}


__all__ = [
    "DataConfig",
    "OptimConfig",
    "SchedConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "TrainLoopConfig",
    "resolve_method_config",
    "resolved_config",
    "upgraded",
]
