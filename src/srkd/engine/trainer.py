"""The training loop: one readable function from a config to a run directory.

Per iteration (0-based ``step``)::

    method.begin_stage(step)?  -> re-wrap the student (DDP, compile), rebuild optimiser, scheduler, EMA
                                  (carrying the optimiser state and schedule when the method asks)
    batch = sampler.batch(step)            # or method.next_batch(): data-free methods make their own inputs
    with autocast: loss, logs = method.training_step(batch)     # method.student is the DDP wrapper
    backward (DDP averages the gradients) -> clip -> one all_reduce: mean loss, non-finite?, stop signal?
    optimizer.step -> scheduler.step -> EMA update -> logs |= method.after_optimizer_step(step)
    every log_every: log;  every ckpt_every: training checkpoint;  every val_every: validate, best/last weights
    SIGINT/SIGTERM received: finish the iteration, save a training checkpoint, stop (exit status 130)

Run directory (``runs/<name>`` unless ``out_dir``): ``config.yaml`` (resolved), ``log.jsonl``, ``tb/``,
``ckpt/iter_*.pt`` (training state, see :mod:`srkd.engine.state`), ``last.safetensors`` and
``best.safetensors`` (srkd model files of the student, its EMA weights when EMA is on).

The student the method trains through is ``method.student``: the plain module on one process, its
``DistributedDataParallel`` wrapper under torchrun (and the ``torch.compile`` wrapper around either when
``train.compile``). Checkpoints, EMA, validation and export use the plain module, ``method.raw_student``. What
is validated and exported is ``method.extract_student(ema or None)`` when the method has one (CSD trains a
slimmable network and ships its slim part), else the EMA copy or the plain student. Training checkpoints hold
the whole trained network. Before training the engine sets ``method.run_dir`` (rank 0; None elsewhere).

A method whose student grows during training (progressive distillation) overrides ``Method.begin_stage(step)``;
returning True means ``method.student`` is a new module, so the engine moves it to the device, wraps it again
(DDP broadcasts rank 0's weights) and rebuilds the optimiser, scheduler and EMA from the new parameters; when
``cfg.method.carry_optimizer()``, the weights that stay keep their optimiser state and the schedule continues. On
resume the method's ``load_extra_state`` must restore the stage (rebuild the student) before the engine loads
the weights. A method's ``extra_state`` is saved per rank (a data-free generator trains on its rank's samples)
and each rank gets its own back when resumed with the same number of ranks.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn as nn

from srkd.config_base import step_decay
from srkd.distill import get_method
from srkd.distill.base import Batch, Method
from srkd.engine import dist, rundir
from srkd.engine import state as ckpt
from srkd.engine.config import TrainConfig
from srkd.engine.ema import EMA
from srkd.engine.logging import RunLogger
from srkd.errors import CheckpointError, ConfigError, SrkdError, TrainingError
from srkd.models import run_sr, to_channels_last
from srkd.models.profile import count_params
from srkd.precision import AMP_DTYPES, precision_warning, resolve_precision


# -- building the pieces ---------------------------------------------------------------------------------
def build_student(cfg: TrainConfig) -> nn.Module:
    from srkd.models import build_model, get_class

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
        _warm_start(student, cfg.student.init)
    return student


def _warm_start(student: nn.Module, path: str) -> None:
    """Copy every tensor whose name and shape match from an srkd model file (another scale's upsampler differs)."""
    from srkd.checkpoint.io import load_model

    try:
        source, _meta = load_model(path)
    except CheckpointError as exc:
        raise CheckpointError(f"student.init: {exc}") from None
    src_arch, own_arch = getattr(source, "spec", None), getattr(student, "spec", None)
    if src_arch is not None and own_arch is not None and src_arch.arch != own_arch.arch:
        raise ConfigError(f"student.init: {path} holds a {src_arch.arch!r} model but the student is {own_arch.arch!r}")
    own = student.state_dict()
    matched = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CheckpointError(f"student.init: {path}: no tensor matches the student ({cfg_arch(student)})")
    student.load_state_dict(matched, strict=False)


def cfg_arch(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return f"{spec.arch} {spec.kwargs}" if spec is not None else type(model).__name__


def build_teacher(cfg: TrainConfig, student: nn.Module) -> nn.Module | None:
    """The frozen teacher, checked against the run: same scale and the same colour mode as the student."""
    t = cfg.teacher
    if t is None:
        return None
    if t.checkpoint is not None:
        from srkd.checkpoint.io import load_model, read_metadata

        try:
            meta = read_metadata(t.checkpoint)
        except CheckpointError as exc:
            raise CheckpointError(f"teacher.checkpoint: {exc}") from None
        if cfg.scale not in meta["scales"]:
            served = "/".join(f"x{s}" for s in meta["scales"])
            raise ConfigError(
                f"teacher.checkpoint: {t.checkpoint} is a {served} model, but the run's scale is x{cfg.scale}"
            )
        if t.arch is not None and meta["arch"] != t.arch.lower():
            raise ConfigError(f"teacher.arch is {t.arch!r} but {t.checkpoint} holds a {meta['arch']!r} model")
        differ = {k: v for k, v in t.kwargs.items() if meta["kwargs"].get(k) != v}
        if differ:
            k = next(iter(differ))
            raise ConfigError(
                f"teacher.kwargs.{k} is {differ[k]!r} but {t.checkpoint} was built with {meta['kwargs'].get(k)!r}"
            )
        teacher, _ = load_model(t.checkpoint, scale=cfg.scale)
    else:
        from srkd.models import build_model

        warnings.warn("teacher has no checkpoint: using a randomly initialised teacher", stacklevel=2)
        try:
            teacher = build_model(t.arch, **{"scale": cfg.scale, **t.kwargs})  # type: ignore[arg-type]
        except SrkdError as exc:
            raise ConfigError(f"teacher: {exc}") from None
    s_colour, t_colour = getattr(student, "colour", "rgb"), getattr(teacher, "colour", "rgb")
    if s_colour != t_colour:
        raise ConfigError(
            f"the teacher works on {t_colour.upper()} images but the student on {s_colour.upper()} "
            f"(teacher {t.checkpoint or t.arch})"
        )
    t_scale = getattr(teacher, "scale", cfg.scale)
    if not getattr(teacher, "upsample_input", False) and int(t_scale) != cfg.scale:
        raise ConfigError(f"the teacher upscales x{t_scale} but the run's scale is x{cfg.scale}")
    return teacher


def build_sampler(cfg: TrainConfig, env: dist.DistEnv, colour: str) -> Any:
    from srkd.data.sampler import PatchSampler, load_training_pairs

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


def check_val_sets(cfg: TrainConfig) -> None:
    """Resolve the validation sets now, so that a typo fails before training rather than hours into it."""
    if not cfg.data.val:
        return
    from srkd.data.benchmark import resolve_dataset

    for name in cfg.data.val:
        resolve_dataset(name, cfg.data.data_root)


@dataclass
class Optim:
    """Everything built from the student's parameters; rebuilt together when the student changes."""

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    names: list[str]  # of params in the plain student ("" for a parameter outside it)


def build_optim(cfg: TrainConfig, method: Method) -> Optim:
    params = list(method.trainable_parameters())
    if not params:
        raise _no_parameters(cfg)
    o = cfg.optim
    if o.name == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
        )
    else:
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    s = cfg.sched
    if s.step_size is not None:
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.StepLR(
            opt, s.step_size, s.gamma
        )
    else:
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, s.milestones, s.gamma)
    ema = EMA(method.raw_student, cfg.train.ema) if cfg.train.ema else None
    names = {id(p): n for n, p in method.raw_student.named_parameters()}
    return Optim(params, opt, sched, ema, [names.get(id(p), "") for p in params])


def carry_optim(old: Optim, new: Optim, method: Method) -> None:
    """After the student grew: each weight that stayed (same name, same shape) takes its optimiser state (Adam
    moments and step count) into the new optimiser, and the lr schedule continues where it was."""
    now = dict(method.raw_student.named_parameters())
    for p, name in zip(old.params, old.names):
        q, state = now.get(name), old.optimizer.state.get(p)
        if q is not None and state and q.shape == p.shape:
            new.optimizer.state[q] = {k: v.to(q.device) if torch.is_tensor(v) and v.dim() else v
                                      for k, v in state.items()}
    new.scheduler.load_state_dict(old.scheduler.state_dict())
    for group, lr in zip(new.optimizer.param_groups, new.scheduler.get_last_lr()):
        group["lr"] = lr


def restore_optim(opt: Optim, saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Load a checkpoint's optimiser moments and schedule position, keeping this config's hyper-parameters.

    torch's ``load_state_dict`` would also bring back the checkpoint's lr, betas, milestones and gamma, so a run
    resumed with a re-timed or longer schedule (``--set sched.milestones=[...]``) would silently keep the old one.
    When nothing changed, the checkpoint's state is restored as it is (a bit-identical resume); otherwise the lr
    is recomputed from the config at the checkpoint's iteration. Returns the changes, for the log.
    """
    mine = [{k: v for k, v in g.items() if k != "params"} for g in opt.optimizer.param_groups]
    sched = opt.scheduler.state_dict()
    opt.optimizer.load_state_dict(saved["optimizer"])
    old = saved["scheduler"]
    changes = [f"{name} {_plain(old.get(key))} -> {_plain(sched.get(key))}"
               for key, name in (("base_lrs", "optim.lr"), ("milestones", "sched.milestones"),
                                 ("step_size", "sched.step_size"), ("gamma", "sched.gamma"))
               if _plain(old.get(key)) != _plain(sched.get(key))]
    for group, hyper in zip(opt.optimizer.param_groups, mine):
        for key in ("betas", "eps", "weight_decay", "momentum"):
            note = f"optim.{key} {_plain(group.get(key))} -> {_plain(hyper.get(key))}"
            if _plain(group.get(key)) != _plain(hyper.get(key)) and note not in changes:
                changes.append(note)
        group.update({k: v for k, v in hyper.items() if k != "lr"})
    if not any(c.startswith(("optim.lr", "sched.")) for c in changes):
        opt.scheduler.load_state_dict(old)
        return changes
    position = {k: old[k] for k in ("last_epoch", "_step_count") if k in old}
    opt.scheduler.load_state_dict({**sched, **position})
    s = cfg.sched
    decay = step_decay(int(old["last_epoch"]), s.milestones, s.step_size, s.gamma)
    lrs = [base * decay for base in opt.scheduler.base_lrs]
    for group, lr in zip(opt.optimizer.param_groups, lrs):
        group["lr"] = lr
    opt.scheduler._last_lr = lrs  # what get_last_lr() reports until the next step
    return changes


def _plain(value: Any) -> Any:
    """Checkpoint and config values in one comparable form (Counter milestones, tuple betas)."""
    if isinstance(value, dict):
        return sorted(m for m, n in value.items() for _ in range(n))
    return list(value) if isinstance(value, tuple | list) else value


def _no_parameters(cfg: TrainConfig) -> ConfigError:
    return ConfigError(f"method {cfg.method.name!r}: the student has no trainable parameters")


def prepare_student(method: Method, cfg: TrainConfig, env: dist.DistEnv) -> None:
    """Device, memory format, DDP and compile wrappers of a (new) student; ``method.student`` becomes the
    outermost wrapper (the plain module on one process without compile)."""
    student = method.raw_student.to(env.device)
    if cfg.train.channels_last:
        student = to_channels_last(student)
    if not any(p.requires_grad for p in student.parameters()):
        raise _no_parameters(cfg)
    wrapped = dist.wrap_ddp(env, student)
    # Compile outside DDP, so that the compiler splits the graph at DDP's gradient buckets. Static shapes: a run
    # feeds the student a few fixed sizes (DUKD: the LR patch and its zoom-out; data-free: one per scale), each
    # compiled once, and inductor's dynamic-shape path fails on the second size (torch 2.13, CPU).
    method.student = cast(nn.Module, torch.compile(wrapped, dynamic=False)) if cfg.train.compile else wrapped


EMA_LAG_DB = 0.5


def ema_lag(ema: dict[str, dict[str, Any]], raw: dict[str, dict[str, Any]] | None) -> float | None:
    """How far (dB, mean over the validation sets) the EMA weights score below the trained ones, when that is more
    than ``EMA_LAG_DB``; else None. An EMA usually scores a few hundredths above; far below means the average mixes
    weights that no longer agree (an EDSR 64f/32b fine-tuned at Adam 1e-3: Set5 23.7 dB EMA against 30.3 raw
    after 1300 iterations)."""
    if not raw:
        return None
    names = [n for n in ema if n in raw]
    if not names:
        return None
    lag = sum(raw[n]["psnr_y"] - ema[n]["psnr_y"] for n in names) / len(names)
    return lag if lag > EMA_LAG_DB else None


def eval_model(method: Method, ema: EMA | None) -> nn.Module:
    """The network to validate and export: the EMA copy when EMA is on, else the plain student; a method that
    trains a bigger network than it ships (CSD's slimmable one) extracts the student from it."""
    extract = getattr(method, "extract_student", None)
    if extract is not None:
        return extract(ema.module if ema is not None else None)
    return ema.module if ema is not None else method.raw_student


def check_resumable(path: Path, saved: dict[str, Any], cfg: TrainConfig) -> None:
    """A checkpoint continues only the kind of run that wrote it (method, student architecture, scale)."""
    run = saved.get("run", {})
    mine = {"method": cfg.method.name, "student_arch": cfg.student.arch.lower(), "scale": cfg.scale}
    for key, value in mine.items():
        if key in run and run[key] != value:
            raise CheckpointError(
                f"{path}: written by a run with {key} {run[key]!r}, but this config has {value!r}; "
                "use another --out (or --resume none in a fresh folder)"
            )


# -- the run ---------------------------------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a training checkpoint (the CLI exits with status 130)."""


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (a batch scheduler, ``kill``, torchrun passing on its own signal) ask the loop
    to stop after the current iteration and save a checkpoint, instead of killing the process mid-iteration and
    losing the progress made since the last checkpoint.

    A second Ctrl-C aborts at once, unless it comes within a second of the first: under torchrun a Ctrl-C
    reaches each worker twice (from the terminal and forwarded by the launcher). SIGKILL is never caught.
    Handlers are installed only in the main thread (Python's rule) and restored on exit.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.received is not None:
            if signum == signal.SIGINT and now - self._when > 1.0:
                raise KeyboardInterrupt
            return
        self.received, self._when = signal.Signals(signum).name, now
        if os.environ.get("RANK", "0") == "0":
            print(
                f"\n{self.received}: stopping after this iteration and saving a checkpoint "
                "(Ctrl-C again to abort without saving)",
                file=sys.stderr,
                flush=True,
            )


def train(cfg: TrainConfig, resume: str | None = "auto", overwrite: bool = False) -> Path:
    """Train (or continue training) the run ``cfg`` describes; returns the run directory.

    ``resume``: ``"auto"`` continues from the newest valid checkpoint in the run directory if there is one,
    a path continues from that checkpoint, ``None`` starts fresh (refused if the run directory already holds
    checkpoints, so nothing is overwritten by accident). A folder holding another run's results is refused
    unless ``overwrite`` (see :mod:`srkd.engine.rundir`), which starts afresh (or from a ``resume`` path) after
    deleting the folder's srkd files. SIGINT/SIGTERM save a checkpoint and raise :class:`Interrupted`.
    """
    env = dist.init(cfg.train.device)
    try:
        with StopSignals() as stop:
            return _train(cfg, resume, env, stop, overwrite)
    finally:
        dist.cleanup(env)


def _train(cfg: TrainConfig, resume: str | None, env: dist.DistEnv, stop: StopSignals, overwrite: bool) -> Path:
    run_dir = cfg.run_dir
    tc = cfg.train
    device = env.device
    slow = precision_warning(tc.precision, device)
    if slow and env.is_main:
        warnings.warn(slow, stacklevel=2)
    precision = resolve_precision(tc.precision, device)  # "auto": bf16 where the device has bf16 kernels
    decays = [cfg.sched.step_size] if cfg.sched.step_size is not None else cfg.sched.milestones
    stages = cfg.method.stage_lengths(tc.iterations)  # the lr schedule restarts with each stage
    late = [m for m in decays if all(m >= n for n in stages)]
    if late and env.is_main:  # typically a paper recipe (decay at 1e5) whose train.iterations was cut to fit
        where = (f"the last of train.iterations={tc.iterations}" if len(stages) == 1 else
                 f"the end of every training stage (lengths {stages}: the schedule restarts with each stage)")
        warnings.warn(f"the learning-rate decay at iteration {', '.join(map(str, late))} comes after {where}: "
                      "it never happens (scale sched with the budget?)", stacklevel=2)

    # 1. where we start from: a checkpoint (resume) or nothing; a folder holding another run's results is refused
    resumed = rundir.starting_point(run_dir, cfg, resume, overwrite, None if env.is_main else _quiet)
    start = int(resumed[1]["step"]) if resumed else 0

    # 2. models, method, data: everything a user can get wrong is checked here, before any training
    method_module = get_method(cfg.method.name)
    needs_teacher = method_module.Method.needs_teacher
    if needs_teacher and cfg.teacher is None:
        raise ConfigError(f"method {cfg.method.name!r} needs a teacher: add a 'teacher' section")
    uses_teacher = method_module.Method.uses_teacher(cfg.method)
    if not uses_teacher and cfg.teacher is not None:
        warnings.warn(
            f"method {cfg.method.name!r} uses no teacher: the 'teacher' section is ignored", stacklevel=2
        )
    if uses_teacher and not needs_teacher and cfg.teacher is not None and cfg.student.init:
        raise ConfigError(  # the teacher's weights would overwrite the warm start (CSD's init_from_teacher)
            f"method {cfg.method.name!r} starts the student from the teacher's weights, so student.init "
            f"({cfg.student.init}) would be overwritten: keep one of them"
        )
    ckpt.seed_everything(cfg.seed)  # identical initialisation on every rank
    student = build_student(cfg)
    teacher = build_teacher(cfg, student) if uses_teacher else None
    if needs_teacher and teacher is not None and env.is_main:
        n_student, n_teacher = count_params(student), count_params(teacher)
        if n_teacher and n_student >= n_teacher:  # a paper recipe's student sized for a bigger teacher than yours
            warnings.warn(f"the student ({n_student / 1e6:.2f} M parameters) is not smaller than its teacher "
                          f"({n_teacher / 1e6:.2f} M): set student.kwargs to the size you want to ship",
                          stacklevel=2)
    colour = getattr(student, "colour", "rgb")
    if cfg.data.colour is not None and cfg.data.colour != colour:
        raise ConfigError(f"data.colour is {cfg.data.colour!r} but the student works on {colour!r} images")
    method: Method = method_module.Method(student, teacher, cfg.method, cfg.scale)
    method.run_dir = run_dir if env.is_main else None
    method.to(device)
    if tc.channels_last:
        to_channels_last(method)
    sampler = None if method.provides_batches else build_sampler(cfg, env, colour)
    unused = [f"data.{k}" for k in ("train", "lr_patch", "augment")
              if k in cfg.data.model_fields_set and getattr(cfg.data, k) != []]
    if method.provides_batches and unused:
        warnings.warn(f"method {cfg.method.name!r} makes its own training images: {', '.join(unused)} "
                      "ignored (data.batch_size and data.val still apply)", stacklevel=2)
    check_val_sets(cfg)

    # 3. restored state, then the run directory (rank 0 writes). In this order: a checkpoint that does not fit
    # this config must leave the folder's config.yaml describing the run that wrote it.
    if resumed:
        path, saved = resumed
        check_resumable(path, saved, cfg)
        method.load_extra_state(_method_state(saved, env))  # may rebuild the student (progressive stages)
        try:
            method.raw_student.load_state_dict(saved["student"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: the checkpoint's student does not fit this config ({_mismatch(exc)}); continue that "
                f"run with its own config ({run_dir / 'config.yaml'}), or train this one in another --out"
            ) from None
    if env.is_main:
        try:
            if overwrite:
                rundir.clear(run_dir)
            ckpt.atomic_write_bytes(run_dir / "config.yaml", rundir.resolved_yaml(cfg).encode("utf-8"))
        except OSError as exc:
            raise TrainingError(f"{run_dir}: cannot write the run folder ({exc.strerror or exc})") from None
    prepare_student(method, cfg, env)
    opt = build_optim(cfg, method)
    amp = AMP_DTYPES.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    best = {"psnr": -math.inf, "step": 0}
    warned = {"ema": False}  # the EMA-lag warning, once a run
    skipped = 0
    changed: list[str] = []
    if resumed:
        path, saved = resumed
        changed = restore_optim(opt, saved, cfg)
        if opt.ema is not None and saved.get("ema") is not None:
            opt.ema.load_state_dict(saved["ema"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        best = dict(saved.get("best", best))
        skipped = int(saved.get("skipped", 0))

    # A checkpoint is written after its iteration's validation, so one that says it was not validated (a stop
    # signal or a failed validation) or predates the flag makes the resumed run validate first: a kill during
    # the final validation must still end with best.safetensors and its record, as the uninterrupted run would.
    revalidate = resumed is not None and start > 0 and _validation_due(start, tc) and not resumed[1].get("validated")
    log = RunLogger(run_dir, tc.iterations, start, enabled=env.is_main, tensorboard=tc.tensorboard,
                    redo_val=revalidate)
    log.record(
        {
            "type": "start",
            "step": start,
            "resumed_from": str(resumed[0]) if resumed else None,
            "method": cfg.method.name,
            "precision": precision,
            "channels_last": tc.channels_last,
            "compile": tc.compile,
            "device": str(device),
            "world_size": env.world_size,
            "ddp": isinstance(
                getattr(method.student, "_orig_mod", method.student), nn.parallel.DistributedDataParallel
            ),
            "backend": torch.distributed.get_backend() if env.distributed else None,
            "global_batch": cfg.data.batch_size * env.world_size,
            "torch": torch.__version__,
            "seed": cfg.seed,
        }
    )
    if resumed:
        log.info(f"resuming {cfg.name} from {resumed[0]} (iteration {start})")
        if changed:
            log.info(f"the config changed since that checkpoint: {', '.join(changed)}; the new values apply from "
                     f"iteration {start} on, and {run_dir / 'config.yaml'} now holds them")

    # The random streams of the loop start here, after every import and construction above (some consume
    # Python's global RNG the first time they run in a process), so a resumed run continues them exactly.
    ckpt.seed_everything(cfg.seed + 1_000_003 * env.rank)  # per-rank randomness inside the methods
    if resumed:
        rngs = resumed[1]["rng"]
        if len(rngs) == env.world_size:
            ckpt.restore_rng(rngs[env.rank])
        else:
            warnings.warn(
                f"{resumed[0]}: saved with {len(rngs)} ranks, resumed with {env.world_size}: random "
                "streams restart (the run stays valid but is not bit-identical)",
                stacklevel=2,
            )

    def save_state(done: int, validated: bool = True) -> Path | None:
        """Training checkpoint after ``done`` iterations: rank 0 writes it, every rank contributes its RNG.
        ``validated``: whether this iteration's validation (if one is due) is done and in ``best``."""
        rngs = dist.gather_objects(env, ckpt.capture_rng())
        method_state = method.extra_state()
        method_ranks = dist.gather_objects(env, _to_cpu(method_state)) if env.distributed else None
        if not env.is_main:
            return None
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(run_dir, done),
            {
                "step": done,
                "student": method.raw_student.state_dict(),
                "ema": opt.ema.state_dict() if opt.ema else None,
                "optimizer": opt.optimizer.state_dict(),
                "scheduler": opt.scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler else None,
                "method": method_state,
                "method_ranks": method_ranks,
                "rng": rngs,
                "best": best,
                "validated": validated,
                "skipped": skipped,
                "run": {
                    "method": cfg.method.name,
                    "student_arch": cfg.student.arch.lower(),
                    "scale": cfg.scale,
                },
            },
        )
        ckpt.prune(run_dir, tc.keep_ckpt)
        return path

    def export(name: str, done: int, extra: dict[str, Any] | None = None, model: nn.Module | None = None) -> None:
        from srkd.checkpoint.io import save_model

        save_model(
            run_dir / name,
            model if model is not None else eval_model(method, opt.ema),
            scales=getattr(method, "scales", None),
            meta={
                "run": cfg.name,
                "method": cfg.method.name,
                "iteration": done,
                "ema": opt.ema is not None,
                "precision": precision,
                **(extra or {}),
            },
        )

    def validate(done: int, batch: Batch) -> None:
        nonlocal best
        if env.is_main:
            # One network for the metrics, the TensorBoard sample and the exports: the EMA copy (or CSD's extracted
            # student), in eval mode, with the random streams preserved. A train-mode forward would draw stochastic
            # depth (SwinIR) from the training's stream, so a run would depend on val_every and on TensorBoard.
            model = eval_model(method, opt.ema).eval()
            results, raw, sample = None, None, None
            with _rng_preserved():
                if cfg.data.val:
                    from srkd.evaluation.evaluate import evaluate_model

                    def scores(net: nn.Module) -> dict[str, dict[str, Any]]:
                        return evaluate_model(
                            net, cfg.data.val, cfg.scale, device=device, data_root=cfg.data.data_root, progress=False
                        )

                    results = scores(model)
                    if opt.ema is not None:  # the trained weights too: an average of weights far apart scores far below them
                        raw = scores(eval_model(method, None).eval())
                if log.has_tensorboard and batch.hr is not None:
                    with torch.no_grad():  # SR | HR of the batch's first training patch
                        sr = run_sr(model, batch.lr[:1], cfg.scale).float()[0]
                    sample = torch.cat([sr, batch.hr[0].float()], dim=-1)
            method.train()
            if results is not None:
                log.val(done, results, raw)
                lag = ema_lag(results, raw)
                if lag is not None and not warned["ema"]:
                    warned["ema"] = True
                    log.info(
                        f"warning: at iteration {done} the EMA weights score {lag:.2f} dB below the trained ones on"
                        f" the validation set, and best.safetensors / last.safetensors hold the EMA weights. The"
                        f" average spans weights too far apart (a high learning rate moves them fast): lower"
                        f" train.ema (0.99 averages ~100 steps, now {cfg.train.ema}) or optim.lr, or train.ema=null (no average)"
                    )
                mean_psnr = sum(r["psnr_y"] for r in results.values()) / len(results)
                if mean_psnr > best["psnr"]:
                    best = {"psnr": mean_psnr, "step": done}
                    val = {k: r["psnr_y"] for k, r in results.items()}
                    export("best.safetensors", done, {"val": val}, model=model)
            if sample is not None:
                log.image(done, "train/sr_hr", sample)
            export("last.safetensors", done, model=model)
        dist.barrier(env)

    # 4. the loop
    method.train()
    sums: dict[str, float] = {}
    n_sum = 0
    grad_sum, grad_max = 0.0, 0.0  # the largest gradient norm of the log window: a spike there is what precedes a divergence
    t_last, step_last = time.perf_counter(), start
    batch = Batch(torch.empty(0))
    try:
        if revalidate:
            validate(start, batch)
            save_state(start)
        for step in range(start, tc.iterations):
            if method.begin_stage(step):
                prepare_student(method, cfg, env)
                old, opt = opt, build_optim(cfg, method)
                if cfg.method.carry_optimizer():
                    carry_optim(old, opt, method)
                log.info(
                    f"iteration {step}: new training stage, {sum(p.numel() for p in opt.params)} parameters"
                )

            batch = method.next_batch(cfg.data.batch_size) if sampler is None else sampler.batch(step)
            batch = batch.to(device, torch.channels_last if tc.channels_last else None)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss, step_logs = method.training_step(batch)
            opt.optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()  # DDP: gradients averaged over ranks here
            if scaler:
                scaler.unscale_(opt.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(opt.params, tc.grad_clip or math.inf)
            local_loss = float(loss.detach())
            # fp16: the grad scaler skips steps with inf gradients itself (they are expected while it calibrates)
            bad_grad = scaler is None and not bool(torch.isfinite(grad_norm))
            global_loss, (loss_bad, grad_bad, stopping) = dist.step_stats(
                env, local_loss, [not math.isfinite(local_loss), bad_grad, stop.received is not None]
            )
            if loss_bad or grad_bad:
                what = f"non-finite {'loss' if loss_bad else 'gradient'}"
                if tc.nonfinite == "stop" or skipped >= tc.max_skips:
                    raise nonfinite_error(what, step + 1, step_logs, skipped, cfg)
                skipped += 1
                log.info(f"iteration {step + 1}: {what} ({_fmt(step_logs)}), step skipped ({skipped} so far)")
            else:
                if scaler:
                    scaler.step(opt.optimizer)
                    scaler.update()
                else:
                    opt.optimizer.step()
                if opt.ema is not None:
                    opt.ema.update(method.raw_student)
                logs: dict[str, torch.Tensor | float] = {**step_logs, **method.after_optimizer_step(step)}
                sums["loss"] = sums.get("loss", 0.0) + global_loss
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n_sum += 1
                grad = float(grad_norm)  # before clipping; DDP ranks hold the same averaged gradients
                grad_sum, grad_max = grad_sum + grad, max(grad_max, grad)
            opt.scheduler.step()
            done = step + 1
            log.advance(done)

            if done % tc.log_every == 0 or done == tc.iterations:
                terms = dist.mean_over_ranks(env, {k: v / max(n_sum, 1) for k, v in sums.items()})
                now = time.perf_counter()
                log.train(
                    done,
                    opt.optimizer.param_groups[0]["lr"],
                    terms,
                    (done - step_last) / (now - t_last),
                    skipped,
                    grad_norm=(grad_sum / n_sum, grad_max) if n_sum else None,
                )
                sums, n_sum, t_last, step_last = {}, 0, now, done
                grad_sum, grad_max = 0.0, 0.0
            due = _validation_due(done, tc)
            if stopping and done < tc.iterations:
                save_state(done, validated=not due)
                log.record({"type": "stop", "step": done, "signal": stop.received or "another rank"})
                log.info(
                    f"stopped after iteration {done}: {ckpt.checkpoint_path(run_dir, done)} saved; "
                    "continue with --resume auto"
                )
                dist.barrier(env)
                raise Interrupted(f"stopped after iteration {done}")
            if due:
                try:
                    validate(done, batch)
                except SrkdError:  # e.g. the validation data vanished: keep the progress made
                    save_state(done, validated=False)
                    raise
            if done % tc.ckpt_every == 0 or done == tc.iterations:
                save_state(done)  # after the validation, so that a checkpoint's `best` includes it
        if start >= tc.iterations and env.is_main and not (run_dir / "last.safetensors").exists():
            export("last.safetensors", start)
    finally:
        log.close()
    return run_dir


def _validation_due(done: int, tc: Any) -> bool:
    return bool(tc.val_every and done % tc.val_every == 0) or done == tc.iterations


def nonfinite_error(
    what: str, iteration: int, logs: dict[str, Any], skipped: int, cfg: TrainConfig
) -> TrainingError:
    latest = ckpt.list_checkpoints(cfg.run_dir)
    kept = f"the last good checkpoint is {latest[-1][1]}" if latest else "no checkpoint was written yet"
    why = "" if cfg.train.nonfinite == "stop" else f" after {skipped} skipped iterations (train.max_skips)"
    return TrainingError(
        f"{what} at iteration {iteration}{why} ({_fmt(logs)}); training stopped, {kept}. "
        "Try a lower optim.lr, train.grad_clip, or train.nonfinite=skip"
    )


def _method_state(saved: dict[str, Any], env: dist.DistEnv) -> dict[str, Any]:
    """This rank's method state: its own when the checkpoint has one per rank for this many ranks."""
    per_rank = saved.get("method_ranks")
    if per_rank is not None and len(per_rank) == env.world_size:
        return per_rank[env.rank]
    return saved.get("method", {})


def _to_cpu(obj: Any) -> Any:
    """A copy of a nested state with CPU tensors (so that gathering it from another GPU's rank is safe)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _quiet(text: str) -> None:
    """Messages that rank 0 already prints."""


@contextlib.contextmanager
def _rng_preserved():
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(npy)


def _fmt(logs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items()) or "no terms"


def _mismatch(exc: BaseException) -> str:
    """The first concrete problem of a ``load_state_dict`` error (its first line only names the class)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:200]


__all__ = ["Interrupted", "build_optim", "build_student", "build_teacher", "eval_model", "train"]
