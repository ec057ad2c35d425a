"""Building a run's pieces from its config: student, teacher, method, training data, the device-side student.

Everything a user can get wrong is checked here, before any training: a teacher of another scale or colour mode,
a method that needs a teacher without one, a warm start that matches no tensor, unknown validation sets.
"""

from __future__ import annotations

import inspect
import warnings
from typing import cast

import torch
import torch.nn as nn

from srkd.checkpoint.io import load_model, read_metadata
from srkd.data.benchmark import resolve_dataset
from srkd.data.sampler import PatchSampler, load_training_pairs
from srkd.distill import get_method
from srkd.distill.base import Method
from srkd.engine import dist
from srkd.engine.config import TrainConfig
from srkd.engine.optim import no_parameters
from srkd.errors import CheckpointError, ConfigError, SrkdError
from srkd.models import build_model, get_class, to_channels_last
from srkd.models.base import find_spec, model_colour, model_scale, upsamples_input
from srkd.models.profile import count_params


def build_student(cfg: TrainConfig) -> nn.Module:
    kwargs = dict(cfg.student.kwargs)
    accepts_scale = "scale" in inspect.signature(get_class(cfg.student.arch).__init__).parameters
    if "scale" in kwargs and int(kwargs["scale"]) != cfg.scale:
        raise ConfigError(f"student.kwargs.scale is {kwargs['scale']} but the run's scale is {cfg.scale}")
    if accepts_scale:
        kwargs["scale"] = cfg.scale
    try:
        student = build_model(cfg.student.arch, **kwargs)
    except SrkdError as exc:
        raise ConfigError(f"student: {exc}") from None
    if cfg.student.init:
        warm_start(student, cfg.student.init)
    return student


def warm_start(student: nn.Module, path: str) -> None:
    """Copy every tensor whose name and shape match from an srkd model file (another scale's upsampler differs)."""
    try:
        source, _meta = load_model(path)
    except CheckpointError as exc:
        raise CheckpointError(f"student.init: {exc}") from None
    src_spec, own_spec = find_spec(source), find_spec(student)
    if src_spec is not None and own_spec is not None and src_spec.arch != own_spec.arch:
        raise ConfigError(f"student.init: {path} holds a {src_spec.arch!r} model but the student is {own_spec.arch!r}")
    own = student.state_dict()
    matched = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"student.init: {path}: no tensor matches the student ({cfg_arch(student)})")
    student.load_state_dict(matched, strict=False)


def cfg_arch(model: nn.Module) -> str:
    spec = find_spec(model)
    return f"{spec.arch} {spec.kwargs}" if spec is not None else type(model).__name__


def _checked_teacher_file(cfg: TrainConfig) -> nn.Module:
    t = cfg.teacher
    assert t is not None and t.checkpoint is not None
    try:
        meta = read_metadata(t.checkpoint)
    except CheckpointError as exc:
        raise CheckpointError(f"teacher.checkpoint: {exc}") from None
    if cfg.scale not in meta["scales"]:
        served = "/".join(f"x{s}" for s in meta["scales"])
        raise ConfigError(f"teacher.checkpoint: {t.checkpoint} is a {served} model, but the run's scale is x{cfg.scale}")
    if t.arch is not None and meta["arch"] != t.arch.lower():
        raise ConfigError(f"teacher.arch is {t.arch!r} but {t.checkpoint} holds a {meta['arch']!r} model")
    differ = {k: v for k, v in t.kwargs.items() if meta["kwargs"].get(k) != v}
    if differ:
        k = next(iter(differ))
        raise ConfigError(
            f"teacher.kwargs.{k} is {differ[k]!r} but {t.checkpoint} was built with {meta['kwargs'].get(k)!r}"
        )
    teacher, _ = load_model(t.checkpoint, scale=cfg.scale)
    return teacher


def build_teacher(cfg: TrainConfig, student: nn.Module) -> nn.Module | None:
    """The frozen teacher, checked against the run: same scale and the same colour mode as the student."""
    t = cfg.teacher
    if t is None:
        return None
    if t.checkpoint is not None:
        teacher = _checked_teacher_file(cfg)
    else:
        warnings.warn("teacher has no checkpoint: using a randomly initialised teacher", stacklevel=2)
        try:
            teacher = build_model(t.arch, **{"scale": cfg.scale, **t.kwargs})  # type: ignore[arg-type]
        except SrkdError as exc:
            raise ConfigError(f"teacher: {exc}") from None
    check_teacher_fits(teacher, student, cfg.scale, f" (teacher {t.checkpoint or t.arch})")
    return teacher


def check_teacher_fits(teacher: nn.Module, student: nn.Module, scale: int, which: str = "") -> None:
    """A teacher works on the student's colour mode and, unless it upsamples its input itself, at the run's scale."""
    s_colour, t_colour = model_colour(student), model_colour(teacher)
    if s_colour != t_colour:
        raise ConfigError(f"the teacher works on {t_colour.upper()} images but the student on {s_colour.upper()}{which}")
    t_scale = model_scale(teacher, scale)
    if not upsamples_input(teacher) and int(t_scale) != scale:
        raise ConfigError(f"the teacher upscales x{t_scale} but the run's scale is x{scale}")


def check_method_needs(cfg: TrainConfig) -> tuple[bool, bool]:
    """(needs a teacher, uses one) for the config's method, after refusing what cannot work together."""
    cls = get_method(cfg.method.name).Method
    needs, uses = cls.needs_teacher, cls.uses_teacher(cfg.method)
    if needs and cfg.teacher is None:
        raise ConfigError(f"method {cfg.method.name!r} needs a teacher: add a 'teacher' section")
    if not uses and cfg.teacher is not None:
        warnings.warn(f"method {cfg.method.name!r} uses no teacher: the 'teacher' section is ignored", stacklevel=3)
    if uses and not needs and cfg.teacher is not None and cfg.student.init:
        raise ConfigError(  # the teacher's weights would overwrite the warm start (CSD's init_from_teacher)
            f"method {cfg.method.name!r} starts the student from the teacher's weights, so student.init "
            f"({cfg.student.init}) would be overwritten: keep one of them"
        )
    return needs, uses


def make_method(cfg: TrainConfig, env: dist.DistEnv, student: nn.Module, teacher: nn.Module | None) -> Method:
    """The method around a built student and teacher, on the run's device (the student not yet wrapped)."""
    needs_teacher = get_method(cfg.method.name).Method.needs_teacher
    if needs_teacher and teacher is not None and env.is_main:
        n_student, n_teacher = count_params(student), count_params(teacher)
        if n_teacher and n_student >= n_teacher:  # a paper recipe's student sized for a bigger teacher than yours
            warnings.warn(f"the student ({n_student / 1e6:.2f} M parameters) is not smaller than its teacher "
                          f"({n_teacher / 1e6:.2f} M): set student.kwargs to the size you want to ship",
                          stacklevel=3)
    colour = model_colour(student)
    if cfg.data.colour is not None and cfg.data.colour != colour:
        raise ConfigError(f"data.colour is {cfg.data.colour!r} but the student works on {colour!r} images")
    method: Method = get_method(cfg.method.name).Method(student, teacher, cfg.method, cfg.scale)
    method.nonfinite = cfg.train.nonfinite_policy  # the student's rule for the method's own updates too
    method.to(env.device)
    if cfg.train.channels_last:
        to_channels_last(method)
    return method


def build_sampler(cfg: TrainConfig, env: dist.DistEnv, colour: str) -> PatchSampler:
    if not cfg.data.train:
        raise ConfigError(
            f"data.train: method {cfg.method.name!r} needs training images (dataset names or folders)"
        )
    # LR images are made once and cached on disk (<data root>/cache/lr): the first process of each machine
    # makes the missing ones, the others then read them from the cache instead of degrading the set again.
    if env.local_rank != 0:
        dist.barrier(env)
    pairs = load_training_pairs(cfg.data.train, cfg.scale, cfg.data.data_root)
    if env.local_rank == 0:
        dist.barrier(env)
    return PatchSampler(
        [hr for _, hr, _ in pairs],
        cfg.scale,
        lr_patch=cfg.data.lr_patch,
        batch_size=cfg.data.batch_size,
        colour=colour,
        augment=cfg.data.augment,
        seed=cfg.seed,
        rank=env.rank,
        world_size=env.world_size,
        names=[name for name, _, _ in pairs],
        lr_images=[lr for _, _, lr in pairs],
    )


def build_data(cfg: TrainConfig, env: dist.DistEnv, method: Method, colour: str) -> PatchSampler | None:
    """The patch sampler, or None for a method that makes its own inputs; the validation sets resolved now, so
    that a typo fails before training rather than hours into it."""
    sampler = None if method.provides_batches else build_sampler(cfg, env, colour)
    unused = [f"data.{k}" for k in ("train", "lr_patch", "augment")
              if k in cfg.data.model_fields_set and getattr(cfg.data, k) != []]
    if method.provides_batches and unused:
        warnings.warn(f"method {cfg.method.name!r} makes its own training images: {', '.join(unused)} "
                      "ignored (data.batch_size and data.val still apply)", stacklevel=3)
    for name in cfg.data.val:
        resolve_dataset(name, cfg.data.data_root)
    return sampler


def prepare_student(method: Method, cfg: TrainConfig, env: dist.DistEnv) -> None:
    """Device, memory format, DDP and compile wrappers of a (new) student; ``method.student`` becomes the
    outermost wrapper (the plain module on one process without compile)."""
    student = method.raw_student.to(env.device)
    if cfg.train.channels_last:
        student = to_channels_last(student)
    if not any(p.requires_grad for p in student.parameters()):
        raise no_parameters(cfg)
    wrapped = dist.wrap_ddp(env, student)
    # Compile outside DDP, so that the compiler splits the graph at DDP's gradient buckets. Static shapes: a run
    # feeds the student a few fixed sizes (DUKD: the LR patch and its zoom-out; data-free: one per scale), each
    # compiled once, and inductor's dynamic-shape path fails on the second size (torch 2.13, CPU).
    method.student = cast(nn.Module, torch.compile(wrapped, dynamic=False)) if cfg.train.compile else wrapped


__all__ = [
    "build_data",
    "build_sampler",
    "build_student",
    "build_teacher",
    "cfg_arch",
    "check_method_needs",
    "check_teacher_fits",
    "make_method",
    "prepare_student",
    "warm_start",
]
