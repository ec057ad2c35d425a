"""The training loop: :func:`setup_run` turns a config into a :class:`Run`, :func:`run_loop` trains it.

Per iteration (0-based ``step``), :func:`run_loop` reads::

    begin_stage   method.begin_stage(step)?  -> re-wrap the student (DDP, compile), rebuild optimiser and EMA
                  (carrying the optimiser state when the method asks)
    lr            schedule.lr_at(step)       a pure function of the iteration (srkd.engine.optim.Schedule)
    batch         sampler.batch(step), or method.next_batch(): data-free methods make their own inputs
    step          optimizer_step(): autocast forward, backward (DDP averages the gradients), clip, one
                  all_reduce (mean loss, non-finite?, stop signal?), optimiser step -> EMA -> after_optimizer_step
    log           every log_every
    stop?         SIGINT/SIGTERM received: save a training checkpoint, stop (exit status 130)
    validate      every val_every: validate, best/last weights
    checkpoint    every ckpt_every: training checkpoint (after the validation, so that it records ``best``)

:func:`save_state` and :func:`validate` are module-level functions of the run. The pieces are built in
:mod:`srkd.engine.build` (student, teacher, method, data) and :mod:`srkd.engine.optim` (optimiser, schedule, the
step itself, shared with the KD-step benchmark).

Run directory (``runs/<name>`` unless ``out_dir``): ``config.yaml`` (resolved), ``log.jsonl``, ``tb/``,
``ckpt/iter_*.pt`` (training state, see :mod:`srkd.engine.state`), ``last.safetensors`` and
``best.safetensors`` (srkd model files of the student, its EMA weights when EMA is on).

The student the method trains through is ``method.student``: the plain module on one process, its
``DistributedDataParallel`` wrapper under torchrun (and the ``torch.compile`` wrapper around either when
``train.compile``). Checkpoints, EMA, validation and export use the plain module, ``method.raw_student``. What
is validated and exported is ``method.extract_student(ema or None)`` (the EMA copy or the plain student, unless
the method ships another network: CSD trains a slimmable one and ships its slim part). Training checkpoints hold
the whole trained network. Images a method shows (``method.samples(done)``: the data-free sample grid) are
written by rank 0's run logger; a NaN/inf loss of the method's own updates follows ``train.nonfinite`` too (the
engine hands the method that policy, :class:`~srkd.optim_base.NonfinitePolicy`).

A method whose student grows during training (``method.progressive``, :mod:`srkd.distill.progressive`, which
the base ``Method.begin_stage(step)`` drives for every method) returns True from ``begin_stage``; that means ``method.student`` is a new module, so the engine moves it to the device, wraps it again
(DDP broadcasts rank 0's weights) and rebuilds the optimiser and EMA from the new parameters; when
``cfg.method.carry_optimizer()``, the weights that stay keep their optimiser state and the schedule runs over the
whole run, else it restarts with each stage (``cfg.method.stage_lengths``). On resume the method's
``load_extra_state`` must restore the stage (rebuild the student) before the engine loads the weights. A
method's ``extra_state`` is saved per rank (a data-free generator trains on its rank's samples) and each rank
gets its own back when resumed with the same number of ranks.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from srkd.checkpoint.io import save_model
from srkd.data.batch import Batch
from srkd.data.sampler import PatchSampler
from srkd.device import resolve_device
from srkd.distill.base import Method
from srkd.engine import dist, rundir
from srkd.engine import state as ckpt
from srkd.engine.build import (
    build_data,
    build_student,
    build_teacher,
    check_method_needs,
    check_teacher_fits,
    make_method,
    prepare_student,
)
from srkd.engine.config import TrainConfig, TrainLoopConfig
from srkd.engine.ema import EMA
from srkd.engine.logging import RunLogger
from srkd.engine.optim import (
    Optim,
    Schedule,
    StepResult,
    build_optim,
    carry_optim,
    make_scaler,
    optimizer_step,
    restore_optim,
    set_lr,
)
from srkd.engine.signals import Interrupted, StopSignals
from srkd.errors import CheckpointError, SrkdError, TrainingError
from srkd.evaluation.evaluate import evaluate_model
from srkd.io import atomic_write_bytes
from srkd.models import run_sr
from srkd.models.base import model_colour
from srkd.precision import AMP_DTYPES, precision_warning, resolve_precision

EMA_LAG_DB = 0.5


# -- the run's state -------------------------------------------------------------------------------------
@dataclass
class Window:
    """The training terms of one log window (summed), from iteration ``start`` and time ``t0``."""

    start: int
    t0: float = field(default_factory=time.perf_counter)
    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0
    grad_sum: float = 0.0
    grad_max: float = 0.0  # the largest gradient norm of the window: a spike there is what precedes a divergence

    def add(self, loss: float, logs: dict[str, Any], grad: float) -> None:
        self.sums["loss"] = self.sums.get("loss", 0.0) + loss
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1
        self.grad_sum, self.grad_max = self.grad_sum + grad, max(self.grad_max, grad)


@dataclass
class Run:
    """Everything the loop reads and updates; :func:`setup_run` builds it, :func:`run_loop` trains it."""

    cfg: TrainConfig
    env: dist.DistEnv
    stop: StopSignals
    method: Method
    sampler: PatchSampler | None
    opt: Optim
    schedule: Schedule
    scaler: torch.amp.GradScaler
    precision: str
    log: RunLogger
    start: int
    best: dict[str, Any]  # {"psnr": mean validation PSNR-Y, "step": its iteration}
    skipped: int = 0  # iterations skipped for a non-finite loss or gradient (train.nonfinite=skip)
    revalidate: bool = False  # the checkpoint resumed from was not validated: validate it first
    ema_warned: bool = False  # the EMA-lag warning, once a run
    stopping: bool = False  # a rank received SIGINT/SIGTERM during this iteration
    global_loss: float = 0.0  # this iteration's loss, averaged over ranks
    batch: Batch = field(default_factory=lambda: Batch(torch.empty(0)))
    window: Window = field(default_factory=lambda: Window(0))

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def amp(self) -> torch.dtype | None:
        return AMP_DTYPES.get(self.precision)


# -- setting up ------------------------------------------------------------------------------------------
def setup_run(
    cfg: TrainConfig,
    resume: str | None = "auto",
    *,
    env: dist.DistEnv | None = None,
    stop: StopSignals | None = None,
    overwrite: bool = False,
    modules: Prebuilt | None = None,
) -> Run:
    """Everything before the first iteration: the checkpoint to resume (see :func:`train`), models, method and
    data (everything a user can get wrong is checked before any training), restored state, the run folder, the
    log, and the loop's random streams. ``env``: the process group (default: one process on
    ``train.device``); ``stop``: the signal handler whose requests the loop honours; ``modules``: networks the
    caller built (``srkd.distill``), used instead of building them from ``cfg``."""
    env = env or dist.DistEnv(device=resolve_device(cfg.train.device, what="train.device"))
    precision = check_precision_and_schedule(cfg, env)
    # 1. where we start from: a checkpoint (resume) or nothing; a folder holding another run's results is refused
    resumed = rundir.starting_point(cfg.run_dir, cfg, resume, overwrite, None if env.is_main else _quiet)
    start = int(resumed[1]["step"]) if resumed else 0
    # 2. models, method, data
    _needs, uses_teacher = check_method_needs(cfg)
    ckpt.seed_everything(cfg.seed)  # identical initialisation on every rank
    student, teacher = build_models(cfg, uses_teacher, modules or Prebuilt())
    method = make_method(cfg, env, student, teacher)
    sampler = build_data(cfg, env, method, model_colour(student))
    # 3. restored weights, then the run folder (rank 0 writes). In this order: a checkpoint that does not fit
    # this config must leave the folder's config.yaml describing the run that wrote it.
    if resumed:
        restore_student(method, resumed, cfg, env)
    write_run_folder(cfg, env, overwrite)
    prepare_student(method, cfg, env)
    opt, schedule, scaler = build_optim(cfg, method), Schedule.from_config(cfg), make_scaler(env.device, precision)
    best: dict[str, Any] = {"psnr": -math.inf, "step": 0}
    skipped, changed = 0, list[str]()
    if resumed:
        best, skipped, changed = restore_training(opt, scaler, resumed[1], schedule, best)
    # A checkpoint is written after its iteration's validation, so one that says it was not validated (a stop
    # signal or a failed validation) or predates the flag makes the resumed run validate first: a kill during
    # the final validation must still end with best.safetensors and its record, as the uninterrupted run would.
    revalidate = resumed is not None and start > 0 and validation_due(start, cfg.train) and \
        not resumed[1].get("validated")
    log = RunLogger(cfg.run_dir, cfg.train.iterations, start, enabled=env.is_main,
                    tensorboard=cfg.train.tensorboard, redo_val=revalidate)
    run = Run(cfg, env, stop or StopSignals(), method, sampler, opt, schedule, scaler, precision, log, start,
              best, skipped, revalidate)
    log_start(run, resumed[0] if resumed else None, changed)
    seed_loop(run, resumed)
    return run


@dataclass(frozen=True)
class Prebuilt:
    """Networks a caller already holds, trained in place of the ones ``cfg`` would build (None: build it)."""

    student: nn.Module | None = None
    teacher: nn.Module | None = None


def build_models(cfg: TrainConfig, uses_teacher: bool, given: Prebuilt) -> tuple[nn.Module, nn.Module | None]:
    """The student and (if the method uses one) the teacher: the caller's, checked like built ones, or built."""
    student = given.student if given.student is not None else build_student(cfg)
    if not uses_teacher:
        return student, None
    if given.teacher is None:
        return student, build_teacher(cfg, student)
    check_teacher_fits(given.teacher, student, cfg.scale)
    return student, given.teacher


def check_precision_and_schedule(cfg: TrainConfig, env: dist.DistEnv) -> str:
    """The run's precision ("auto": bf16 where the device has bf16 kernels), with warnings for a slow precision
    and for a learning-rate decay that no training stage reaches."""
    tc = cfg.train
    slow = precision_warning(tc.precision, env.device)
    if slow and env.is_main:
        warnings.warn(slow, stacklevel=3)
    decays = [cfg.sched.step_size] if cfg.sched.step_size is not None else cfg.sched.milestones
    stages = cfg.method.stage_lengths(tc.iterations)  # the lr schedule restarts with each stage
    late = [m for m in decays if all(m >= n for n in stages)]
    if late and env.is_main:  # typically a paper recipe (decay at 1e5) whose train.iterations was cut to fit
        where = (f"the last of train.iterations={tc.iterations}" if len(stages) == 1 else
                 f"the end of every training stage (lengths {stages}: the schedule restarts with each stage)")
        warnings.warn(f"the learning-rate decay at iteration {', '.join(map(str, late))} comes after {where}: "
                      "it never happens (scale sched with the budget?)", stacklevel=3)
    return resolve_precision(tc.precision, env.device)


def restore_student(method: Method, resumed: tuple[Path, dict[str, Any]], cfg: TrainConfig,
                    env: dist.DistEnv) -> None:
    """The method's state (which may rebuild the student: progressive stages), then the student's weights."""
    path, saved = resumed
    check_resumable(path, saved, cfg)
    method.load_extra_state(_method_state(saved, env))
    try:
        method.raw_student.load_state_dict(saved["student"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the checkpoint's student does not fit this config ({_mismatch(exc)}); continue that "
            f"run with its own config ({cfg.run_dir / 'config.yaml'}), or train this one in another --out"
        ) from None


def write_run_folder(cfg: TrainConfig, env: dist.DistEnv, overwrite: bool) -> None:
    if not env.is_main:
        return
    try:
        if overwrite:
            rundir.clear(cfg.run_dir)
        atomic_write_bytes(cfg.run_dir / "config.yaml", rundir.resolved_yaml(cfg).encode("utf-8"))
    except OSError as exc:
        raise TrainingError(f"{cfg.run_dir}: cannot write the run folder ({exc.strerror or exc})") from None


def restore_training(opt: Optim, scaler: torch.amp.GradScaler, saved: dict[str, Any], schedule: Schedule,
                     best: dict[str, Any]) -> tuple[dict[str, Any], int, list[str]]:
    """Optimiser, EMA and grad-scaler states of a checkpoint; returns its (best, skipped, config changes)."""
    changed = restore_optim(opt, saved, schedule)
    if opt.ema is not None and saved.get("ema") is not None:
        opt.ema.load_state_dict(saved["ema"])
    if scaler.is_enabled() and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    return dict(saved.get("best", best)), int(saved.get("skipped", 0)), changed


def log_start(run: Run, resumed_from: Path | None, changed: list[str]) -> None:
    cfg, env, tc = run.cfg, run.env, run.cfg.train
    run.log.record({
        "type": "start",
        "step": run.start,
        "resumed_from": str(resumed_from) if resumed_from else None,
        "method": cfg.method.name,
        "precision": run.precision,
        "channels_last": tc.channels_last,
        "compile": tc.compile,
        "device": str(env.device),
        "world_size": env.world_size,
        "ddp": env.distributed,  # dist.wrap_ddp wraps the student exactly when there are several ranks
        "backend": torch.distributed.get_backend() if env.distributed else None,
        "global_batch": cfg.data.batch_size * env.world_size,
        "torch": torch.__version__,
        "seed": cfg.seed,
    })
    if resumed_from:
        run.log.info(f"resuming {cfg.name} from {resumed_from} (iteration {run.start})")
        if changed:
            run.log.info(f"the config changed since that checkpoint: {', '.join(changed)}; the new values apply from "
                         f"iteration {run.start} on, and {run.run_dir / 'config.yaml'} now holds them")


def seed_loop(run: Run, resumed: tuple[Path, dict[str, Any]] | None) -> None:
    """The random streams of the loop start here, after every import and construction above (some consume
    Python's global RNG the first time they run in a process), so a resumed run continues them exactly."""
    env = run.env
    ckpt.seed_everything(run.cfg.seed + 1_000_003 * env.rank)  # per-rank randomness inside the methods
    if not resumed:
        return
    rngs = resumed[1]["rng"]
    if len(rngs) == env.world_size:
        ckpt.restore_rng(rngs[env.rank])
    else:
        warnings.warn(f"{resumed[0]}: saved with {len(rngs)} ranks, resumed with {env.world_size}: random streams "
                      "restart (the run stays valid but is not bit-identical)", stacklevel=3)


# -- the loop --------------------------------------------------------------------------------------------
def run_loop(run: Run) -> None:
    """Train from ``run.start`` to ``train.iterations``."""
    tc = run.cfg.train
    run.method.train()
    run.window = Window(run.start)
    if run.revalidate:
        validate(run, run.start)
        save_state(run, run.start)
    for step in range(run.start, tc.iterations):
        begin_stage(run, step)
        set_lr(run.opt.optimizer, run.schedule.lr_at(step))
        run.batch = next_batch(run, step)
        result = optimizer_step(run.method, run.batch, run.opt.optimizer, run.opt.params, run.scaler, run.amp,
                                tc.grad_clip, gate=partial(check_step, run, step))
        after_step(run, step, result)
        done = step + 1
        log_progress(run, done)
        if run.stopping and done < tc.iterations:
            stop_here(run, done)
        if validation_due(done, tc):
            validate_or_keep_progress(run, done)
        if done % tc.ckpt_every == 0 or done == tc.iterations:
            save_state(run, done)  # after the validation, so that a checkpoint's `best` includes it
    if run.start >= tc.iterations and run.env.is_main and not (run.run_dir / "last.safetensors").exists():
        export(run, "last.safetensors", run.start)
    # Rank 0 writes the last checkpoint and exports after the other ranks' last collective: without this, a rank
    # that starts another run in the same process group (or reads the folder) can see the folder before them.
    dist.barrier(run.env)


def begin_stage(run: Run, step: int) -> None:
    """A method whose student grew: wrap the new one and rebuild what was built from its parameters."""
    if not run.method.begin_stage(step):
        return
    prepare_student(run.method, run.cfg, run.env)
    old, run.opt = run.opt, build_optim(run.cfg, run.method)
    if run.cfg.method.carry_optimizer():
        carry_optim(old, run.opt, run.method)
    run.log.info(f"iteration {step}: new training stage, {sum(p.numel() for p in run.opt.params)} parameters")


def next_batch(run: Run, step: int) -> Batch:
    batch = run.method.next_batch(run.cfg.data.batch_size) if run.sampler is None else run.sampler.batch(step)
    return batch.to(run.env.device, torch.channels_last if run.cfg.train.channels_last else None)


def check_step(run: Run, step: int, result: StepResult) -> bool:
    """Whether the step's update applies: one all_reduce gives every rank the mean loss and the same decisions
    (a non-finite loss or gradient on any rank skips the update or stops the run; a stop signal on any rank)."""
    tc = run.cfg.train
    local_loss = float(result.loss)
    # fp16: the grad scaler skips steps with inf gradients itself (they are expected while it calibrates)
    bad_grad = not run.scaler.is_enabled() and not bool(torch.isfinite(result.grad_norm))
    run.global_loss, (loss_bad, grad_bad, run.stopping) = dist.step_stats(
        run.env, local_loss, [not math.isfinite(local_loss), bad_grad, run.stop.received is not None]
    )
    if not (loss_bad or grad_bad):
        return True
    what = f"non-finite {'loss' if loss_bad else 'gradient'}"
    if not tc.nonfinite_policy.skips(run.skipped):
        raise nonfinite_error(what, step + 1, result.logs, run.skipped, run.cfg)
    run.skipped += 1
    run.log.info(f"iteration {step + 1}: {what} ({_fmt(result.logs)}), step skipped ({run.skipped} so far)")
    return False


def after_step(run: Run, step: int, result: StepResult) -> None:
    """After an applied update: the EMA, the method's own update (a data-free generator), the images it shows
    (rank 0 writes them), the window's terms."""
    if not result.applied:
        return
    if run.opt.ema is not None:
        run.opt.ema.update(run.method.raw_student)
    logs: dict[str, torch.Tensor | float] = {**result.logs, **run.method.after_optimizer_step(step)}
    if run.env.is_main:
        run.log.samples(step + 1, run.method.samples(step + 1))
    run.window.add(run.global_loss, logs, float(result.grad_norm))  # norm before clipping, the same on all ranks


def log_progress(run: Run, done: int) -> None:
    run.log.advance(done)
    tc, w = run.cfg.train, run.window
    if done % tc.log_every != 0 and done != tc.iterations:
        return
    terms = dist.mean_over_ranks(run.env, {k: v / max(w.n, 1) for k, v in w.sums.items()})
    now = time.perf_counter()
    run.log.train(done, run.schedule.lr_at(done), terms, (done - w.start) / (now - w.t0), run.skipped,
                  grad_norm=(w.grad_sum / w.n, w.grad_max) if w.n else None)
    run.window = Window(done, now)


def stop_here(run: Run, done: int) -> None:
    save_state(run, done, validated=not validation_due(done, run.cfg.train))
    run.log.record({"type": "stop", "step": done, "signal": run.stop.received or "another rank"})
    run.log.info(f"stopped after iteration {done}: {ckpt.checkpoint_path(run.run_dir, done)} saved; "
                 "continue with --resume auto")
    dist.barrier(run.env)
    raise Interrupted(f"stopped after iteration {done}")


def validate_or_keep_progress(run: Run, done: int) -> None:
    try:
        validate(run, done)
    except SrkdError:  # e.g. the validation data vanished: keep the progress made
        save_state(run, done, validated=False)
        raise


def validation_due(done: int, tc: TrainLoopConfig) -> bool:
    return bool(tc.val_every and done % tc.val_every == 0) or done == tc.iterations


# -- checkpoints and exports -----------------------------------------------------------------------------
def save_state(run: Run, done: int, validated: bool = True) -> Path | None:
    """Training checkpoint after ``done`` iterations: rank 0 writes it, every rank contributes its RNG.
    ``validated``: whether this iteration's validation (if one is due) is done and in ``best``."""
    env, method, opt = run.env, run.method, run.opt
    rngs = dist.gather_objects(env, ckpt.capture_rng())
    method_state = method.extra_state()
    method_ranks = dist.gather_objects(env, _to_cpu(method_state)) if env.distributed else None
    if not env.is_main:
        return None
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(run.run_dir, done), {
        "step": done,
        "student": method.raw_student.state_dict(),
        "ema": opt.ema.state_dict() if opt.ema else None,
        "optimizer": opt.optimizer.state_dict(),
        "schedule": run.schedule.as_record(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "method": method_state,
        "method_ranks": method_ranks,
        "rng": rngs,
        "best": run.best,
        "validated": validated,
        "skipped": run.skipped,
        "run": {"method": run.cfg.method.name, "student_arch": run.cfg.student.arch.lower(), "scale": run.cfg.scale},
    })
    ckpt.prune(run.run_dir, run.cfg.train.keep_ckpt)
    return path


def export(run: Run, name: str, done: int, extra: dict[str, Any] | None = None, model: nn.Module | None = None) -> None:
    """An srkd model file of the network to ship (see :func:`eval_model`) in the run folder."""
    save_model(
        run.run_dir / name,
        model if model is not None else eval_model(run.method, run.opt.ema),
        scales=run.method.scales,
        meta={"run": run.cfg.name, "method": run.cfg.method.name, "iteration": done, "ema": run.opt.ema is not None,
              "precision": run.precision, **(extra or {})},
    )


def eval_model(method: Method, ema: EMA | None) -> nn.Module:
    """The network to validate and export: the EMA copy when EMA is on, else the plain student, as the method
    ships it (``Method.extract_student``: CSD's slim part of its slimmable network)."""
    return method.extract_student(ema.module if ema is not None else None)


# -- validation ------------------------------------------------------------------------------------------
def validate(run: Run, done: int) -> None:
    """Rank 0 scores the network to ship on ``data.val``, keeps ``best.safetensors`` and writes
    ``last.safetensors``; the other ranks wait. One network for the metrics, the TensorBoard sample and the
    exports: the EMA copy (or CSD's extracted student), in eval mode, with the random streams preserved. A
    train-mode forward would draw stochastic depth (SwinIR) from the training's stream, so a run would depend on
    val_every and on TensorBoard."""
    if run.env.is_main:
        model = eval_model(run.method, run.opt.ema).eval()
        with _rng_preserved():
            results, raw = val_scores(run, model)
            sample = train_sample(run, model)
        run.method.train()
        if results is not None:
            record_val(run, done, results, raw, model)
        if sample is not None:
            run.log.image(done, "train/sr_hr", sample)
        export(run, "last.safetensors", done, model=model)
    dist.barrier(run.env)


Scores = dict[str, dict[str, Any]]


def val_scores(run: Run, model: nn.Module) -> tuple[Scores | None, Scores | None]:
    """Scores of ``model`` and, with EMA, of the trained weights too (an average of weights far apart scores
    far below them)."""
    cfg = run.cfg
    if not cfg.data.val:
        return None, None
    scores = partial(evaluate_model, sets=cfg.data.val, scale=cfg.scale, device=run.env.device,
                     data_root=cfg.data.data_root, progress=False)
    results = scores(model)
    raw = scores(eval_model(run.method, None).eval()) if run.opt.ema is not None else None
    return results, raw


def train_sample(run: Run, model: nn.Module) -> torch.Tensor | None:
    """SR | HR of the last batch's first training patch, for TensorBoard."""
    if not run.log.has_tensorboard or run.batch.hr is None:
        return None
    with torch.no_grad():
        sr = run_sr(model, run.batch.lr[:1], run.cfg.scale).float()[0]
    return torch.cat([sr, run.batch.hr[0].float()], dim=-1)


def record_val(run: Run, done: int, results: Scores, raw: Scores | None, model: nn.Module) -> None:
    run.log.val(done, results, raw)
    lag = ema_lag(results, raw)
    if lag is not None and not run.ema_warned:
        run.ema_warned = True
        run.log.info(
            f"warning: at iteration {done} the EMA weights score {lag:.2f} dB below the trained ones on"
            f" the validation set, and best.safetensors / last.safetensors hold the EMA weights. The"
            f" average spans weights too far apart (a high learning rate moves them fast): lower"
            f" train.ema (0.99 averages ~100 steps, now {run.cfg.train.ema}) or optim.lr, or train.ema=null (no average)"
        )
    mean_psnr = sum(r["psnr_y"] for r in results.values()) / len(results)
    if mean_psnr > run.best["psnr"]:
        run.best = {"psnr": mean_psnr, "step": done}
        export(run, "best.safetensors", done, {"val": {k: r["psnr_y"] for k, r in results.items()}}, model=model)


def ema_lag(ema: Scores, raw: Scores | None) -> float | None:
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


# -- the entry point -------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig, resume: str | None = "auto", overwrite: bool = False, modules: Prebuilt | None = None
) -> Path:
    """Train (or continue training) the run ``cfg`` describes; returns the run directory.

    ``resume``: ``"auto"`` continues from the newest valid checkpoint in the run directory if there is one,
    a path continues from that checkpoint, ``None`` starts fresh (refused if the run directory already holds
    checkpoints, so nothing is overwritten by accident). A folder holding another run's results is refused
    unless ``overwrite`` (see :mod:`srkd.engine.rundir`), which starts afresh (or from a ``resume`` path) after
    deleting the folder's srkd files. ``modules``: networks the caller built (see :func:`setup_run`).
    SIGINT/SIGTERM save a checkpoint and raise :class:`Interrupted`.
    """
    env = dist.init(cfg.train.device)
    try:
        with StopSignals() as stop:
            run = setup_run(cfg, resume, env=env, stop=stop, overwrite=overwrite, modules=modules)
            try:
                run_loop(run)
            finally:
                run.log.close()
            return cfg.run_dir
    finally:
        dist.cleanup(env)


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
def _rng_preserved() -> Iterator[None]:
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


__all__ = [
    "Interrupted",
    "Run",
    "StopSignals",
    "build_optim",
    "build_student",
    "build_teacher",
    "eval_model",
    "run_loop",
    "save_state",
    "setup_run",
    "train",
    "validate",
]
