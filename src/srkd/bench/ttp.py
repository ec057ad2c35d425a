"""Time to quality as a user sees it: the student's PSNR against training wall-clock minutes, srkd vs BasicSR-style.

A step ratio (``kd-step``) says how much faster one iteration is; a user waits for a PSNR. This benchmark trains
the student of each method's quick recipe (``edsr-x4-kd-quick``, ``edsr-x4-dukd-quick``: EDSR 64f/32b teacher ->
16f/32b student, x4, LR 32, batch 16, Adam 2e-3 with its step decay, on T91 + BSD200 + General100) for the same
wall-clock budget with two loops, and evaluates the student (Y-channel PSNR, border = scale, fp32) every
``--eval-every`` seconds of training:

- ``srkd``: the engine's iteration (the recipe's method, precision, channels_last, optimiser, schedule and EMA
  update, :func:`srkd.engine.optim.optimizer_step`), as ``srkd train`` runs it;
- ``basicsr``: :class:`~srkd.bench.kd_step.BasicSRStep`, the public DUKD code's iteration, with the recipe's
  optimiser settings and the same learning rate per iteration.

Both loops start from the same student weights, draw the same batches (iteration ``i`` gets ``sampler.batch(i)``)
and alternate in one process, one evaluation interval each (A B, B A...), so the machine's drift hits both.
Only training steps run on the clock: evaluation is excluded. Both sides are evaluated on their raw student
weights (the EMA copy ``srkd train`` exports lags far behind at these budgets, and the public code's EMA is not
part of BasicSRStep). Without ``--teacher`` the recipe's teacher file is used when it exists, else a random
teacher (the curves then measure only how fast each loop fits the HR images and a meaningless teacher term;
the note in the result says so).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from srkd.bench.common import (
    BenchOptions,
    basicsr_reference,
    comparison,
    fmt_s,
    resolve_bench_device,
    summarize,
)
from srkd.bench.kd_step import BasicSRStep, sample_sampler
from srkd.checkpoint.io import load_model
from srkd.config_base import load_config
from srkd.data.batch import Batch
from srkd.data.sampler import PatchSampler, load_training_pairs
from srkd.distill import get_method
from srkd.engine.config import TrainConfig
from srkd.engine.optim import Schedule, build_optim, make_scaler, optimizer_step, set_lr
from srkd.errors import SrkdError
from srkd.evaluation import evaluate_model
from srkd.io import atomic_write_bytes
from srkd.models import build_model, to_channels_last
from srkd.precision import AMP_DTYPES, resolve_precision
from srkd.recipes import resolve_recipe
from srkd.report.figures import line_plot

RECIPES = {"kd": "edsr-x4-kd-quick", "dukd": "edsr-x4-dukd-quick"}
LOOPS = ("srkd", "basicsr")
# --quick: tiny networks and patches on the bundled photos, a few seconds of training (a smoke test).
QUICK_OVERRIDES = ("student.kwargs.n_feats=4", "student.kwargs.n_resblocks=2", "data.batch_size=2",
                   "data.lr_patch=12")
QUICK_TEACHER = {"n_feats": 8, "n_resblocks": 2}


def recipe_teacher(cfg: TrainConfig, spec: str | None, quick: bool) -> tuple[nn.Module, str]:
    """``--teacher``, else the recipe's teacher file where it exists, else a seeded random one (with a note)."""
    if spec:
        return load_model(spec, scale=cfg.scale)[0], spec
    assert cfg.teacher is not None
    path = cfg.teacher.checkpoint
    if path and not quick and Path(path).is_file():
        return load_model(path, scale=cfg.scale)[0], path
    torch.manual_seed(cfg.seed)
    kwargs = {**cfg.teacher.kwargs, **(QUICK_TEACHER if quick else {"n_feats": 64, "n_resblocks": 32})}
    why = "--quick" if quick else f"no --teacher and {path or 'no teacher file'} not found"
    note = (f"random {cfg.teacher.arch} {kwargs} ({why}: the KD terms chase an untrained network, so only the "
            "speed of each loop is meaningful)")
    return build_model(cfg.teacher.arch or "edsr", scale=cfg.scale, **kwargs), note


class SrkdLoop:
    """One iteration as ``srkd train`` runs it on the recipe's config (batch, lr, optimizer_step, loss read
    back, EMA)."""

    def __init__(self, cfg: TrainConfig, student: nn.Module, teacher: nn.Module, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.method = get_method(cfg.method.name).Method(student, teacher, cfg.method, cfg.scale).to(device)
        if cfg.train.channels_last:
            to_channels_last(self.method)
        self.method.train()
        self.opt = build_optim(cfg, self.method)
        self.schedule = Schedule.from_config(cfg)
        self.precision = resolve_precision(cfg.train.precision, device)
        self.scaler = make_scaler(device, self.precision)
        self.layout = torch.channels_last if cfg.train.channels_last else None

    @property
    def student(self) -> nn.Module:
        return self.method.raw_student

    def __call__(self, step: int, batch: Batch) -> None:
        set_lr(self.opt.optimizer, self.schedule.lr_at(step))
        batch = batch.to(self.device, self.layout)
        result = optimizer_step(self.method, batch, self.opt.optimizer, self.opt.params, self.scaler,
                                AMP_DTYPES.get(self.precision), self.cfg.train.grad_clip)
        float(result.loss)
        if self.opt.ema is not None:
            self.opt.ema.update(self.method.raw_student)


class BasicSRLoop:
    """:class:`BasicSRStep` with the recipe's optimiser and learning rate per iteration."""

    def __init__(self, cfg: TrainConfig, student: nn.Module, teacher: nn.Module, device: torch.device,
                 imresize: Callable[..., Any]) -> None:
        m, o = cfg.method, cfg.optim
        if o.name != "adam":
            raise SrkdError(f"time-to-psnr: the BasicSR-style loop uses Adam; the recipe's optimiser is {o.name}")
        self.step_fn = BasicSRStep(m.name, student, teacher, cfg.scale, device, imresize,
                                   pix_weight=float(getattr(m, "pix_weight", 1.0)),
                                   augment_p=float(getattr(m, "augment_p", 0.3)), lr=o.lr, betas=(o.betas[0], o.betas[1]),
                                   eps=o.eps)
        self.schedule = Schedule.from_config(cfg)

    @property
    def student(self) -> nn.Module:
        return self.step_fn.net_g

    def __call__(self, step: int, batch: Batch) -> None:
        set_lr(self.step_fn.optimizer, self.schedule.lr_at(step))
        float(self.step_fn(batch))


@dataclass
class Track:
    """One loop's run: its training clock (seconds), iterations, step times and the curve."""

    name: str
    loop: Callable[[int, Batch], None]
    student: nn.Module
    clock: float = 0.0
    steps: int = 0
    step_times: list[float] = field(default_factory=list)
    step_cpu: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)

    def train_until(self, seconds: float, batches: Callable[[int], Batch]) -> None:
        while self.clock < seconds:
            batch_start = time.perf_counter(), time.process_time()
            self.loop(self.steps, batches(self.steps))
            wall, cpu = time.perf_counter() - batch_start[0], time.process_time() - batch_start[1]
            self.clock += wall
            self.step_times.append(wall)
            self.step_cpu.append(cpu)
            self.steps += 1


def minutes_to_reach(curve: list[dict[str, float]], psnr: float) -> float | None:
    """The first training time (linear between evaluations) at which ``curve`` reaches ``psnr``; None: never."""
    prev = None
    for point in curve:
        if point["psnr_y"] >= psnr:
            if prev is None or point["psnr_y"] == prev["psnr_y"]:
                return point["minutes"]
            f = (psnr - prev["psnr_y"]) / (point["psnr_y"] - prev["psnr_y"])
            return prev["minutes"] + f * (point["minutes"] - prev["minutes"])
        prev = point
    return None


def _sampler(cfg: TrainConfig, opts: BenchOptions) -> Any:
    if opts.quick:
        return sample_sampler(cfg.scale, cfg.data.lr_patch, cfg.data.batch_size, seed=cfg.seed, split="val")
    pairs = load_training_pairs(cfg.data.train, cfg.scale, opts.data_root or cfg.data.data_root)
    return PatchSampler([hr for _, hr, _ in pairs], cfg.scale, lr_patch=cfg.data.lr_patch,
                        batch_size=cfg.data.batch_size, augment=cfg.data.augment, seed=cfg.seed,
                        names=[n for n, _, _ in pairs], lr_images=[lr for _, _, lr in pairs])


def run_method(method: str, opts: BenchOptions, device: torch.device, loops: list[str], imresize: Any,
               cache: str) -> dict[str, Any]:
    cfg = load_config(TrainConfig, resolve_recipe(RECIPES[method]), list(QUICK_OVERRIDES) if opts.quick else [])
    teacher, teacher_label = recipe_teacher(cfg, opts.extra.get("teacher"), opts.quick)
    torch.manual_seed(cfg.seed)
    student = build_model(cfg.student.arch, scale=cfg.scale, **cfg.student.kwargs)
    sampler = _sampler(cfg, opts)
    eval_set = opts.extra.get("eval_set") or ("samples-val" if opts.quick else "Set5")
    budget = 60.0 * float(opts.extra.get("minutes") or (0.02 if opts.quick else 10.0))
    every = float(opts.extra.get("eval_every") or (0.6 if opts.quick else 60.0))
    if budget <= 0 or every <= 0:
        raise SrkdError("--minutes and --eval-every must be positive")

    tracks = []
    for name in loops:
        s, t = copy.deepcopy(student), copy.deepcopy(teacher)
        loop: Any = SrkdLoop(cfg, s, t, device) if name == "srkd" else BasicSRLoop(cfg, s, t, device, imresize)
        tracks.append(Track(name, loop, loop.student))

    def evaluate(track: Track) -> None:
        res = evaluate_model(track.student, [eval_set], cfg.scale, device=device, precision="fp32",
                             data_root=opts.data_root, cache_dir=cache, progress=False)
        track.curve.append({"minutes": track.clock / 60.0, "step": track.steps,
                            "psnr_y": float(next(iter(res.values()))["psnr_y"])})

    for track in tracks:
        evaluate(track)
    torch.manual_seed(cfg.seed + 1)  # the loops' own draws (DUKD's augmentations, zoom-in tiles)
    segment = 0
    while any(t.clock < budget for t in tracks):
        until = min(budget, (segment + 1) * every)
        for track in tracks if segment % 2 == 0 else tracks[::-1]:
            if track.clock < until:
                track.train_until(until, sampler.batch)
                evaluate(track)
        segment += 1
    return summary(method, cfg, teacher_label, eval_set, budget, every, tracks)


def summary(method: str, cfg: TrainConfig, teacher: str, eval_set: str, budget: float, every: float,
            tracks: list[Track]) -> dict[str, Any]:
    by = {t.name: t for t in tracks}
    out: dict[str, Any] = {
        "recipe": cfg.name, "teacher": teacher, "eval_set": eval_set, "budget_s": budget, "eval_every_s": every,
        "loops": {t.name: {"steps": t.steps, "train_s": t.clock, "steps_per_s": t.steps / t.clock if t.clock else None,
                           "final_psnr_y": t.curve[-1]["psnr_y"], "curve": t.curve} for t in tracks},
    }
    if "srkd" in by and "basicsr" in by:
        target_psnr = by["basicsr"].curve[-1]["psnr_y"]
        reach = minutes_to_reach(by["srkd"].curve, target_psnr)
        out["srkd_minutes_to_basicsr_final"] = reach
        # how much sooner srkd reaches the PSNR the BasicSR-style loop ends the budget with
        out["time_to_psnr_speedup"] = (by["basicsr"].clock / 60.0) / reach if reach else None
        out["final_psnr_gain_db"] = by["srkd"].curve[-1]["psnr_y"] - target_psnr
        out["step"] = comparison(f"{method} training step", summarize(by["basicsr"].step_times, by["basicsr"].step_cpu),
                                 summarize(by["srkd"].step_times, by["srkd"].step_cpu),
                                 baseline_label="BasicSR-style step (BasicSRStep)",
                                 ours_label="srkd train's step (optimizer_step)")
    return out


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    methods = list(opts.extra.get("methods") or RECIPES)
    loops = list(opts.extra.get("loops") or LOOPS)
    if not loops or any(v not in LOOPS for v in loops):
        raise SrkdError(f"--loops {','.join(loops)}: choose from {', '.join(LOOPS)}")
    imresize = basicsr_reference().imresize if "basicsr" in loops else None
    with tempfile.TemporaryDirectory(prefix="srkd-bench-ttp-") as cache:
        runs = {m: run_method(m, opts, device, loops, imresize, cache) for m in methods}
    plot = Path(opts.extra.get("plot") or "time-to-psnr.png")
    atomic_write_bytes(plot, plot_png(runs))
    rows = [r["step"] for r in runs.values() if "step" in r]
    return {
        "config": {"methods": methods, "loops": loops, "recipes": {m: RECIPES[m] for m in methods},
                   "minutes": next(iter(runs.values()))["budget_s"] / 60.0 if runs else None,
                   "eval_every_s": next(iter(runs.values()))["eval_every_s"] if runs else None,
                   "weights_evaluated": "raw student (no EMA) on both sides", "plot": str(plot)},
        "comparisons": rows,
        "metrics": {"runs": runs},
        "targets": [],
    }


def plot_png(runs: dict[str, dict[str, Any]]) -> bytes:
    series = {f"{m} {loop}": [(p["minutes"], p["psnr_y"]) for p in r["loops"][loop]["curve"]]
              for m, r in runs.items() for loop in r["loops"]}
    sets = {r["eval_set"] for r in runs.values()}
    return line_plot(series, xlabel="training wall-clock (minutes, evaluation excluded)",
                     ylabel=f"{'/'.join(sorted(sets))} PSNR-Y (dB)", title="time to PSNR: srkd vs BasicSR-style loop")


def describe(result: dict[str, Any]) -> list[str]:
    lines = []
    for m, r in result["metrics"]["runs"].items():
        for loop, v in r["loops"].items():
            lines.append(f"{m} {loop}: {v['steps']} steps in {fmt_s(v['train_s'])} of training, {r['eval_set']} "
                         f"PSNR-Y {r['loops'][loop]['curve'][0]['psnr_y']:.3f} -> {v['final_psnr_y']:.3f} dB")
        if r.get("srkd_minutes_to_basicsr_final") is not None:
            lines.append(f"{m}: srkd reaches the BasicSR-style loop's final PSNR after "
                         f"{r['srkd_minutes_to_basicsr_final']:.2f} min of {r['budget_s'] / 60:.2f}: "
                         f"{r['time_to_psnr_speedup']:.2f}x sooner; final PSNR {r['final_psnr_gain_db']:+.3f} dB")
        elif "srkd_minutes_to_basicsr_final" in r:
            lines.append(f"{m}: srkd never reached the BasicSR-style loop's final PSNR "
                         f"({r['final_psnr_gain_db']:+.3f} dB at the end)")
        if "step" in r:
            s = r["step"]
            lines.append(f"{m}: training step BasicSR-style {fmt_s(s['baseline']['median_s'])}, srkd "
                         f"{fmt_s(s['ours']['median_s'])} ({s['ratio']:.2f}x)")
        lines.append(f"{m}: teacher {r['teacher']}")
    lines.append(f"plot: {result['config']['plot']}")
    return lines
