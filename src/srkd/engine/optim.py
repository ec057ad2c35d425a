"""The optimiser side of the engine: what is built from the student's parameters, the learning rate as a pure
function of the iteration, and :func:`optimizer_step`, the arithmetic of one training iteration.

:func:`optimizer_step` is the one place where a method's loss becomes a parameter update (autocast forward,
backward through the grad scaler, gradient norm and clipping, the optimiser step). The training loop
(:mod:`srkd.engine.trainer`) and the KD-step benchmark (:mod:`srkd.bench.kd_step`) both call it, so the benchmark
measures the step the engine runs.

The learning rate is :meth:`Schedule.lr_at` of the iteration, like nanoGPT's ``get_lr``: step decay at
``sched.milestones`` (MultiStepLR) or every ``sched.step_size`` iterations (StepLR), restarting at each training
stage of a progressive method unless it carries its optimiser (``MethodConfig.stage_lengths``). The values are
the ones torch's schedulers compute (``lr * gamma`` once per decay, in the same order), so a run is bit-identical
to one driven by ``MultiStepLR``/``StepLR``, and a resumed run needs no scheduler state: the iteration is enough.
``Schedule``, ``set_lr`` and the optimiser's construction live in :mod:`srkd.optim_base` (re-exported here),
because a method's own optimiser (the data-free generator's) uses them too and ``distill`` sits below the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from srkd.data.batch import Batch
from srkd.distill.base import Method
from srkd.engine.config import TrainConfig
from srkd.engine.ema import EMA
from srkd.errors import ConfigError
from srkd.optim_base import Schedule, build_optimizer, set_lr


# -- the learning rate (Schedule, set_lr: srkd.optim_base) -----------------------------------------------
def saved_schedule(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's schedule record; one written before ``schedule`` existed (format 1) holds the state of a
    torch ``MultiStepLR``/``StepLR``, read into the same form."""
    if "schedule" in saved:
        return dict(saved["schedule"])
    old = saved.get("scheduler") or {}
    counts = old.get("milestones") or {}
    return {
        "lr": (old.get("base_lrs") or [None])[0],
        "milestones": sorted(m for m, n in dict(counts).items() for _ in range(n)),
        "step_size": old.get("step_size"),
        "gamma": old.get("gamma"),
    }


# -- what is built from the student's parameters --------------------------------------------------------
@dataclass
class Optim:
    """Everything built from the student's parameters; rebuilt together when the student changes."""

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    names: list[str]  # of params in the plain student ("" for a parameter outside it)


def no_parameters(cfg: TrainConfig) -> ConfigError:
    return ConfigError(f"method {cfg.method.name!r}: the student has no trainable parameters")


def build_optim(cfg: TrainConfig, method: Method) -> Optim:
    params = list(method.trainable_parameters())
    if not params:
        raise no_parameters(cfg)
    opt = build_optimizer(params, cfg.optim)
    ema = EMA(method.raw_student, cfg.train.ema) if cfg.train.ema else None
    names = {id(p): n for n, p in method.raw_student.named_parameters()}
    return Optim(params, opt, ema, [names.get(id(p), "") for p in params])


def carry_optim(old: Optim, new: Optim, method: Method) -> None:
    """After the student grew: each weight that stayed (same name, same shape) takes its optimiser state (Adam
    moments and step count) into the new optimiser. (The lr schedule continues by itself: it is a function of
    the iteration, over the whole run when the method carries its optimiser.)"""
    now = dict(method.raw_student.named_parameters())
    for p, name in zip(old.params, old.names):
        q, state = now.get(name), old.optimizer.state.get(p)
        if q is not None and state and q.shape == p.shape:
            new.optimizer.state[q] = {k: v.to(q.device) if torch.is_tensor(v) and v.dim() else v
                                      for k, v in state.items()}


def restore_optim(opt: Optim, saved: dict[str, Any], schedule: Schedule) -> list[str]:
    """Load a checkpoint's optimiser moments, keeping this config's hyper-parameters.

    torch's ``load_state_dict`` would also bring back the checkpoint's lr, betas, eps... so a run resumed with
    other settings (``--set optim.eps=...``) would silently keep the old ones. The schedule needs no restoring
    (the lr is a function of the iteration); a changed one applies from the checkpoint's iteration on. Returns
    the changes (schedule and optimiser settings), for the log.
    """
    mine = [{k: v for k, v in g.items() if k != "params"} for g in opt.optimizer.param_groups]
    opt.optimizer.load_state_dict(saved["optimizer"])
    old, new = saved_schedule(saved), schedule.as_record()
    old["lr"], new["lr"] = [old.get("lr")], [new["lr"]]  # shown per parameter group, as before: [0.001] -> [0.002]
    changes = [f"{name} {_plain(old.get(key))} -> {_plain(new[key])}"
               for key, name in (("lr", "optim.lr"), ("milestones", "sched.milestones"),
                                 ("step_size", "sched.step_size"), ("gamma", "sched.gamma"))
               if _plain(old.get(key)) != _plain(new[key])]
    for group, hyper in zip(opt.optimizer.param_groups, mine):
        for key in ("betas", "eps", "weight_decay", "momentum"):
            note = f"optim.{key} {_plain(group.get(key))} -> {_plain(hyper.get(key))}"
            if _plain(group.get(key)) != _plain(hyper.get(key)) and note not in changes:
                changes.append(note)
        group.update({k: v for k, v in hyper.items() if k not in ("lr", "initial_lr")})
    return changes


def _plain(value: Any) -> Any:
    """Checkpoint and config values in one comparable form (tuple betas, list milestones)."""
    if isinstance(value, dict):
        return sorted(m for m, n in value.items() for _ in range(n))
    return list(value) if isinstance(value, tuple | list) else value


# -- one iteration's arithmetic -------------------------------------------------------------------------
@dataclass
class StepResult:
    loss: torch.Tensor  # detached
    logs: dict[str, torch.Tensor]
    grad_norm: torch.Tensor  # before clipping
    applied: bool = True  # False: the gate refused the update (a non-finite loss or gradient that is skipped)


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16's loss scaling; at any other precision a disabled scaler, whose calls pass everything through."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def optimizer_step(
    method: Method,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    params: Iterable[nn.Parameter],
    scaler: torch.amp.GradScaler,
    amp: torch.dtype | None,
    grad_clip: float | None = None,
    gate: Callable[[StepResult], bool] | None = None,
) -> StepResult:
    """One training iteration on a batch already on its device: the method's loss under autocast (``amp``: the
    autocast dtype, None for fp32), backward through the grad scaler, the gradient norm (always measured; clipped
    at ``grad_clip``), then the optimiser step unless ``gate`` (given the result so far) returns False."""
    with torch.autocast(batch.lr.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        loss, logs = method.training_step(batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # DDP: gradients averaged over ranks here
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
    result = StepResult(loss.detach(), logs, grad_norm)
    result.applied = gate is None or gate(result)
    if result.applied:
        scaler.step(optimizer)  # fp16: skips steps with inf gradients itself (expected while it calibrates)
    # Also after a step the gate refused (train.nonfinite: skip): the unscale above must be closed by an update,
    # or the next iteration's unscale_ raises "already been called"; an update after inf gradients lowers the scale.
    scaler.update()
    return result


__all__ = [
    "Optim",
    "Schedule",
    "StepResult",
    "build_optim",
    "carry_optim",
    "make_scaler",
    "optimizer_step",
    "restore_optim",
    "saved_schedule",
    "set_lr",
]
