"""The data-free generators as a trained component: one network per scale, their optimisers and lr schedule, what
a NaN/inf generator loss does, and what a checkpoint keeps of them.

Configured by ``method.generator``::

    generator: {every: 50, batch_size: null, latent_dim: 256, criterion: null, reduction: mean,
                optim: {lr: 1.0e-5, betas: [0.9, 0.999]}, sched: {step_size: 60000, gamma: 0.1}}

``optim`` and ``sched`` are the engine's own types (:mod:`srkd.optim_base`), read the same way as the student's
``optim``/``sched`` sections: the generator's learning rate is ``Schedule.lr_at`` of the student iterations done
(no restart at progressive stages: the generator survives growth). Only the defaults differ: the generator's are
DFSR's (Adam 1e-5, betas (0.9, 0.999), eps 1e-8, no decay). A non-finite generator loss follows the run's one
policy (``train.nonfinite`` / ``train.max_skips``, :class:`~srkd.optim_base.NonfinitePolicy`), its skips counted
here. What the generator learns (DFSR's losses) is the method's business (:mod:`srkd.distill.datafree`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
import torch.nn as nn
from pydantic import Field

from srkd.config_base import StrictModel
from srkd.errors import ConfigError, SrkdError, TrainingError
from srkd.models import build_model
from srkd.optim_base import (
    Betas,
    NonfinitePolicy,
    OptimConfig,
    SchedConfig,
    Schedule,
    build_optimizer,
    set_lr,
)


class GeneratorOptimConfig(OptimConfig):
    """The engine's optimiser settings with DFSR's generator defaults (a partial section keeps the others)."""

    name: Literal["adam", "sgd"] = Field("adam", description="the generator's optimiser: adam or sgd")
    lr: float = Field(1e-5, gt=0, allow_inf_nan=False, description="the generator's initial learning rate")
    betas: Betas = Field((0.9, 0.999), description="Adam's moment decays (beta1, beta2), each in [0, 1)")


class GeneratorConfig(StrictModel):
    """``method.generator``: how the data-free generators are built and trained."""

    every: int = Field(50, ge=1, description="k: student steps per generator step")
    batch_size: int | None = Field(None, ge=2, description="generator batch (default: the student's)")
    latent_dim: int = Field(256, ge=1, description="size of the generator's latent vector z")
    criterion: Literal["l1", "mse"] | None = Field(
        None, description="the generator's L_KD and L_R criterion (None: as the student's)")
    reduction: Literal["mean", "sum"] = Field("mean", description="reduction of the generator's losses")
    optim: GeneratorOptimConfig = Field(default_factory=GeneratorOptimConfig,
                                        description="the generator's optimiser (the engine's optim keys)")
    sched: SchedConfig = Field(default_factory=SchedConfig,
                               description="the generator's lr step decay, in student iterations")


class Generators(nn.Module):
    """One generator per scale (``lr_sizes``: scale -> LR side; empty when the method has no generator), each
    with its optimiser; one schedule, one skip count."""

    def __init__(self, cfg: GeneratorConfig, lr_sizes: dict[int, int], channels: int, image_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.nets = nn.ModuleDict()
        self.optimizers: dict[int, torch.optim.Optimizer] = {}
        for s, size in lr_sizes.items():
            try:
                g = build_model("generator", image_size=size, channels=channels, latent_dim=cfg.latent_dim)
            except SrkdError as exc:
                raise ConfigError(f"method.image_size {image_size} at x{s}: {exc}") from None
            self.nets[str(s)] = g
            self.optimizers[s] = build_optimizer(g.parameters(), cfg.optim)
        self.schedule = Schedule.of(cfg.optim, cfg.sched)
        self.skipped = 0  # generator updates skipped for a non-finite loss (train.nonfinite: skip)

    def __bool__(self) -> bool:
        return len(self.nets) > 0

    def due(self, done: int) -> bool:
        """Whether a generator update follows student iteration ``done`` (1-based)."""
        return bool(self.nets) and done % self.cfg.every == 0

    def sample(self, scale: int, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
        """``n`` images of ``scale``'s generator from codes of ``rng`` (graph kept for the generator's update)."""
        z = torch.randn(n, self.cfg.latent_dim, generator=rng).to(device)
        return self.nets[str(scale)](z)

    def step(self, scale: int, done: int, losses: dict[str, torch.Tensor], policy: NonfinitePolicy) -> dict[str, float]:
        """One optimiser step of ``scale``'s generator on ``losses["L_G"]`` after ``done`` student iterations,
        unless the loss is not finite (then ``policy`` skips the update or stops the run)."""
        logs = {k: float(v.detach()) for k, v in losses.items()}
        if not math.isfinite(logs["L_G"]):
            what = (f"non-finite generator loss at iteration {done} ("
                    + ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if k != "L_G") + ")")
            if not policy.skips(self.skipped):
                raise TrainingError(f"datafree: {what}; lower method.generator.optim.lr or method.w_r")
            self.skipped += 1
            warnings.warn(f"datafree: {what}: generator update skipped ({self.skipped} so far)", stacklevel=3)
            return {"gen_skipped": float(self.skipped)}
        opt = self.optimizers[scale]
        set_lr(opt, self.schedule.lr_at(done))
        params = [p for p in self.nets[str(scale)].parameters() if p.requires_grad]
        if losses["L_G"].requires_grad:
            grads = torch.autograd.grad(losses["L_G"], params)  # generator only: student/teacher .grad untouched
        else:  # fidelity code without L_R: the published code steps Adam on all-zero gradients
            grads = tuple(torch.zeros_like(p) for p in params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        return logs

    # -- checkpoints: the keys of the method state before the split, unchanged ---------------------------
    def state(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "generators": {k: g.state_dict() for k, g in self.nets.items()},
            "gen_optimizers": {str(s): o.state_dict() for s, o in self.optimizers.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """The saved generators and optimiser moments, keeping this config's optimiser settings (as the engine
        keeps the student's): a resume with another ``generator.optim`` applies it from then on."""
        self.skipped = int(state.get("skipped", 0))
        gens = state.get("generators", {})
        if set(gens) != set(self.nets):
            raise TrainingError(f"datafree resume: checkpoint has generators {sorted(gens)}, config {sorted(self.nets)}")
        for k, sd in gens.items():
            self.nets[k].load_state_dict(sd)
        for k, sd in state.get("gen_optimizers", {}).items():
            opt = self.optimizers[int(k)]
            mine = [{key: v for key, v in group.items() if key not in ("params", "lr", "initial_lr")}
                    for group in opt.param_groups]
            opt.load_state_dict(sd)
            for group, hyper in zip(opt.param_groups, mine):
                group.update(hyper)


__all__ = ["GeneratorConfig", "GeneratorOptimConfig", "Generators"]
