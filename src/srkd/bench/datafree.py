"""Data-free round: srkd's DFSR student and generator steps against the published DFSR code's way of running them.

A round is what the data-free method repeats: ``k`` student steps, then one generator step (``k`` is the recipe's;
5 in ``datafree-vdsr-quick``, VDSR 64x20 teacher -> VDSR-half (32 features) student, x2, batch 16).

srkd's side (:class:`SrkdDatafreeRound`) is the method exactly as ``srkd train`` runs it: the run's config is the
shipped recipe read by the normal config loader (so a renamed or re-tuned method key reaches the benchmark
without an edit here), the method built from it, the student grown to its final (full-depth) stage, each student
step driven through :func:`srkd.engine.optim.optimizer_step` with the recipe's precision, channels_last and
optimiser, then ``method.after_optimizer_step`` as the engine calls it (which makes the generator step when due).

The baseline (:class:`PublishedDFSRRound`) is written here the way the published DFSR code
(huawei-noah/Efficient-Computing, ``distillation.py``) runs the same round (facts in
``../shared/notes/reference-implementations.md``): fp32 NCHW, the teacher's parameters requiring gradients (never
frozen, never under ``no_grad``), the generated images kept in the graph in the student step and upsampled by the
MATLAB bicubic that ends in ``round(255 x) / 255`` (here ``srkd.ops.imresize`` then the rounding: srkd's batched
resize is at least as fast as the published gather-based module, so the ratio errs towards the baseline), every
backward carried down to the generator through that rounding (whose gradient is zero), the student on SGD with
gradient clipping, every generator's Adam stepped in the generator step, and summed-MSE losses.

Both sides start from the same weights (student, teacher, generators) and alternate rounds in one process.
"""

from __future__ import annotations

import copy
import inspect
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.bench.common import (
    BenchOptions,
    comparison,
    fmt_s,
    interleaved,
    ratio_text,
    resolve_bench_device,
    speedup,
    target,
)
from srkd.checkpoint.io import load_model
from srkd.config_base import load_config
from srkd.data.batch import Batch
from srkd.distill import get_method
from srkd.distill.base import Method
from srkd.engine.config import TrainConfig
from srkd.engine.optim import Schedule, StepResult, build_optim, make_scaler, optimizer_step, set_lr
from srkd.errors import SrkdError
from srkd.models import build_model, get_class, to_channels_last
from srkd.models.generator_arch import Generator
from srkd.ops.imresize import imresize
from srkd.precision import AMP_DTYPES, resolve_precision
from srkd.recipes import resolve_recipe

RECIPE = "datafree-vdsr-quick"
# --quick: the recipe with a tiny student and batch (a smoke test of the code path); the teacher is made tiny too.
QUICK_OVERRIDES = ("student.kwargs.n_feats=8", "student.kwargs.n_layers=4", "data.batch_size=2")
QUICK_TEACHER = {"n_feats": 8, "n_layers": 6}
MAX_STUDENT_STEPS = 10_000  # a round that never reaches a generator step is a configuration error, not a hang
# The published code's student optimiser (distillation.py defaults) and generator Adam learning rate.
SGD_LR, SGD_MOMENTUM, SGD_WEIGHT_DECAY = 0.1, 0.9, 1e-4
CLIP = 0.4
GEN_LR = 1e-3


def recipe_config(recipe: str = RECIPE, quick: bool = False, overrides: list[str] | None = None) -> TrainConfig:
    """The run's config as ``srkd train RECIPE`` reads it (plus ``--quick``'s size overrides)."""
    sets = [*(QUICK_OVERRIDES if quick else ()), *(overrides or [])]
    return load_config(TrainConfig, resolve_recipe(recipe), sets)


def make_teacher(cfg: TrainConfig, checkpoint: str | None, quick: bool = False) -> tuple[nn.Module, str]:
    """The teacher and how it was made: ``checkpoint`` if given, else a seeded random network of the recipe's
    teacher architecture at its default size (VDSR 64x20: speed does not depend on the weights)."""
    if checkpoint:
        return load_model(checkpoint, scale=cfg.scale)[0], checkpoint
    if cfg.teacher is None:
        raise SrkdError(f"{cfg.name}: the recipe has no teacher section")
    arch = cfg.teacher.arch or "vdsr"
    torch.manual_seed(cfg.seed)
    kwargs = {**cfg.teacher.kwargs, **(QUICK_TEACHER if quick else {})}
    teacher = build_model(arch, **_with_scale(arch, cfg.scale, kwargs))
    return teacher, f"random {arch} {kwargs or '(default size)'}"


def build_student(cfg: TrainConfig) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return build_model(cfg.student.arch, **_with_scale(cfg.student.arch, cfg.scale, dict(cfg.student.kwargs)))


def _with_scale(arch: str, scale: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    takes_scale = "scale" in inspect.signature(get_class(arch).__init__).parameters
    return {**kwargs, "scale": scale} if takes_scale else kwargs


def generators_by_scale(method: nn.Module, default_scale: int) -> dict[int, Generator]:
    """The method's generators, by the scale they serve (the trailing index of their module name, ``generators.2``)."""
    found: dict[int, Generator] = {}
    for name, module in method.named_modules():
        if isinstance(module, Generator):
            tail = name.rsplit(".", 1)[-1]
            found[int(tail) if tail.isdigit() else default_scale] = module
    if not found:
        raise SrkdError("the data-free method built no generator (inputs: generator is needed for this benchmark)")
    return found


# -- srkd's side -------------------------------------------------------------------------------------------
class SrkdDatafreeRound:
    """The data-free method as the engine drives it, on the recipe's config, at the student's final depth.

    ``student_step`` is the engine's iteration up to the update (``next_batch``, the batch on the device in the
    run's layout, :func:`optimizer_step`, the loss read back as the engine's check does, the EMA);
    ``after`` is ``method.after_optimizer_step`` (the generator step when due). ``round`` repeats both until a
    generator step has run and returns the number of student steps it took.
    """

    def __init__(self, cfg: TrainConfig, student: nn.Module, teacher: nn.Module, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.method: Method = get_method(cfg.method.name).Method(student, teacher, cfg.method, cfg.scale)
        self.method.to(device)
        if cfg.train.channels_last:
            to_channels_last(self.method)
        self.method.train()
        # The student as it trains for most of the run: grown to the depth it has at the last iteration.
        self.method.begin_stage(cfg.train.iterations - 1)
        self.opt = build_optim(cfg, self.method)
        self.schedule = Schedule.from_config(cfg)
        self.precision = resolve_precision(cfg.train.precision, device)
        self.amp = AMP_DTYPES.get(self.precision)
        self.scaler = make_scaler(device, self.precision)
        self.layout = torch.channels_last if cfg.train.channels_last else None
        self.step = 0
        self.student_steps_per_round: int | None = None

    def next_batch(self) -> Batch:
        return self.method.next_batch(self.cfg.data.batch_size).to(self.device, self.layout)

    def update(self, batch: Batch) -> StepResult:
        set_lr(self.opt.optimizer, self.schedule.lr_at(self.step))
        result = optimizer_step(self.method, batch, self.opt.optimizer, self.opt.params, self.scaler, self.amp,
                                self.cfg.train.grad_clip)
        float(result.loss)  # the engine reads the loss back every step (its non-finite check)
        if self.opt.ema is not None:
            self.opt.ema.update(self.method.raw_student)
        return result

    def student_step(self) -> StepResult:
        return self.update(self.next_batch())

    def after(self) -> dict[str, float]:
        """``after_optimizer_step`` of the current iteration; non-empty logs: the generator stepped."""
        logs = self.method.after_optimizer_step(self.step)
        self.step += 1
        return logs

    def round(self) -> int:
        for n in range(1, MAX_STUDENT_STEPS + 1):
            self.student_step()
            if self.after():
                self.student_steps_per_round = n
                return n
        raise SrkdError(f"no generator step after {MAX_STUDENT_STEPS} student steps: is the generator trained?")

    def generator_step(self) -> dict[str, float]:
        """One generator step alone (for the profile): ``after_optimizer_step`` at the next iteration that makes
        one. Needs a finished :meth:`round` first (the method takes its autocast and batch size from a step)."""
        k = self.student_steps_per_round
        if k is None:
            raise SrkdError("run one round before timing generator steps alone")
        self.step += (-(self.step + 1)) % k  # the next iteration whose after_optimizer_step steps the generator
        logs = self.after()
        if not logs:
            raise SrkdError(f"after_optimizer_step({self.step - 1}) made no generator step")
        return logs


# -- the published code's round ----------------------------------------------------------------------------
def published_bicubic(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB bicubic ending in ``round(255 x) / 255`` as the published module does (gradient: exactly zero)."""
    return torch.round(255.0 * imresize(x, scale=scale)) / 255.0


def mse_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a, b, reduction="sum")


class PublishedDFSRRound:
    """The published DFSR code's round, rewritten for this benchmark (module docstring): fp32 NCHW copies of the
    given networks, the teacher never frozen, ``student_steps`` SGD steps then one generator step."""

    def __init__(self, student: nn.Module, teacher: nn.Module, generators: dict[int, Generator], batch_size: int,
                 student_steps: int, device: torch.device, w_r: float = 1.0) -> None:
        def fp32(m: nn.Module) -> nn.Module:
            m = copy.deepcopy(m).to(device=device, dtype=torch.float32)
            return m.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # torch's stubs lack it

        self.student = fp32(student).train().requires_grad_(True)
        self.teacher = fp32(teacher).train().requires_grad_(True)  # the published code never disables them
        self.generators = {s: fp32(g).train().requires_grad_(True) for s, g in generators.items()}
        self.latent_dims = {s: g.latent_dim for s, g in generators.items()}
        self.batch_size, self.student_steps, self.device, self.w_r = batch_size, student_steps, device, w_r
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM,
                                         weight_decay=SGD_WEIGHT_DECAY)
        self.gen_optimizers = [torch.optim.Adam(g.parameters(), lr=GEN_LR) for g in self.generators.values()]
        self.rng = random.Random(0)

    def _generate(self) -> tuple[int, torch.Tensor]:
        scale = self.rng.choice(sorted(self.generators))
        gen = self.generators[scale]
        z = torch.randn(self.batch_size, self.latent_dims[scale], device=self.device)
        return scale, gen(z)  # kept in the graph, as published

    def student_step(self) -> torch.Tensor:
        scale, lr = self._generate()
        x = published_bicubic(lr, scale).clamp(0.0, 1.0)
        teacher_sr = self.teacher(x)  # recorded by autograd (teacher parameters require grad)
        loss = mse_sum(self.student(x), teacher_sr.detach())
        self.optimizer.zero_grad()
        loss.backward()  # down to the generator, through the rounding: zeros accumulate in its .grad
        nn.utils.clip_grad_norm_(self.student.parameters(), CLIP)
        self.optimizer.step()
        return loss.detach()

    def generator_losses(self) -> dict[str, torch.Tensor]:
        """The generator step's terms with their graphs: ``genkd`` = -log(1 + L_KD), ``recon`` = L_R."""
        scale, lr = self._generate()
        x = published_bicubic(lr, scale).clamp(0.0, 1.0)
        teacher_sr = self.teacher(x)
        genkd = -torch.log(1.0 + mse_sum(self.student(x), teacher_sr))
        back = published_bicubic(teacher_sr, 1.0 / scale).clamp(0.0, 1.0)
        return {"genkd": genkd, "recon": mse_sum(lr, back), "lr": lr}

    def generator_step(self) -> torch.Tensor:
        for opt in self.gen_optimizers:
            opt.zero_grad()
        losses = self.generator_losses()
        loss = losses["genkd"] + self.w_r * losses["recon"]
        loss.backward()  # through student and teacher (their .grad too) and the rounding, as published
        for opt in self.gen_optimizers:
            opt.step()
        return loss.detach()

    def round(self) -> int:
        for _ in range(self.student_steps):
            self.student_step()
        self.generator_step()
        return self.student_steps


# -- the benchmark -----------------------------------------------------------------------------------------
@dataclass
class Pair:
    """Both sides built from the same weights, srkd's warmed up by one round (which tells ``k``)."""

    cfg: TrainConfig
    ours: SrkdDatafreeRound
    baseline: PublishedDFSRRound
    teacher_label: str


def build_pair(opts: BenchOptions, device: torch.device) -> Pair:
    cfg = recipe_config(opts.extra.get("recipe") or RECIPE, opts.quick)
    teacher, label = make_teacher(cfg, opts.extra.get("teacher"), opts.quick)
    student = build_student(cfg)
    ours = SrkdDatafreeRound(cfg, student, teacher, device)
    gens = generators_by_scale(ours.method, cfg.scale)
    # Same starting weights: the baseline copies srkd's networks before either side trains.
    base_student, base_teacher = ours.method.raw_student, ours.method.teacher
    assert base_teacher is not None
    baseline = PublishedDFSRRound(base_student, base_teacher, gens, cfg.data.batch_size, 1, device)
    torch.manual_seed(1)
    baseline.student_steps = ours.round()  # srkd's first round: its warm-up, and the recipe's k
    return Pair(cfg, ours, baseline, label)


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    repeats = opts.reps(default=5)
    pair = build_pair(opts, device)
    pair.baseline.round()  # the baseline's warm-up (srkd's was build_pair's round)
    timing = interleaved({"baseline": pair.baseline.round, "ours": pair.ours.round}, repeats=repeats, warmup=0,
                         device=device)
    k = pair.baseline.student_steps
    row = comparison("datafree round", timing["baseline"], timing["ours"],
                     baseline_label="published DFSR code style: fp32 NCHW, teacher with grad, rounded bicubic "
                     "in the graph, SGD + clip, summed MSE",
                     ours_label=f"srkd train's data-free method ({pair.ours.precision}"
                     f"{' + channels_last' if pair.cfg.train.channels_last else ''}, optimizer_step)")
    row["student_steps_per_round"] = k
    cfg = pair.cfg
    return {
        "config": {
            "recipe": cfg.name,
            "teacher": pair.teacher_label,
            "student": {"arch": cfg.student.arch, **cfg.student.kwargs},
            "student_params": sum(p.numel() for p in pair.ours.method.raw_student.parameters()),
            "scale": cfg.scale,
            "batch_size": cfg.data.batch_size,
            "round": f"{k} student steps + 1 generator step",
            "precision": pair.ours.precision,
            "repeats": repeats,
        },
        "comparisons": [row],
        "metrics": {"student_steps_per_round": k},
        "targets": [target("datafree round speed-up vs published-code style", speedup(row), ">=", 8.0,
                           row["ratio_cpu"])],
    }


def describe(result: dict[str, Any]) -> list[str]:
    c = result["config"]
    lines = [f"{c['recipe']}: teacher {c['teacher']} -> student {c['student']}, x{c['scale']}, batch "
             f"{c['batch_size']}, round = {c['round']}, srkd precision {c['precision']}"]
    for r in result["comparisons"]:
        lines.append(f"{r['name']}: published-code style {fmt_s(r['baseline']['median_s'])}, srkd "
                     f"{fmt_s(r['ours']['median_s'])} -> {ratio_text(r)}")
    return lines
