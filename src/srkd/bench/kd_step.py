"""KD training step: srkd's step against a BasicSR-style step written here the way the public code runs it.

Setting of the performance issue: EDSR 64f/32b teacher -> EDSR 16f/32b student, x4, batch 16, LR patch 48, real
patches from the bundled sample photos. Two methods: DUKD (srkd defaults: zoom-in and zoom-out, invertible
augmentations) and response KD (``pix + kd``).

srkd's step is the training engine's loop body (:class:`SrkdStep`): precision ``auto`` (bf16 autocast where the
device has bf16 kernels, else fp32) and channels_last, the teacher frozen (eval, ``requires_grad=False``) and run
under ``no_grad`` once per distinct input, the LR and the zoom-in crops stacked into one batch, the zoom-out made
on the device by the torch ``imresize``, one backward and one optimiser step.

The baseline (:class:`BasicSRStep`) is what the public DUKD code (BasicSR 1.4.2) does per iteration, rewritten
here: fp32 NCHW, the teacher in train mode with gradients on and no ``no_grad`` (so every loss term
back-propagates through the teacher too), one teacher forward per loss term, the zoom-out made by BasicSR's own
``imresize`` on the CPU one image at a time, and DUKD's two backward/optimiser steps per iteration.

On a CUDA device the same comparison runs, and srkd's step also reports achieved TFLOP/s (forward + backward
FLOPs counted by ``torch.utils.flop_counter``) and MFU against the device's dense bf16 peak; ``--compile``
compiles student and teacher, ``--cuda-graphs`` uses ``torch.compile(mode="reduce-overhead")`` (CUDA graphs).
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from srkd.bench.common import (
    BenchOptions,
    basicsr_reference,
    comparison,
    fmt_s,
    interleaved,
    ratio_text,
    resolve_bench_device,
    speedup,
    target,
)
from srkd.checkpoint.io import load_model
from srkd.data.batch import Batch
from srkd.data.sampler import PatchSampler
from srkd.data.samples import sample_images
from srkd.distill import get_method
from srkd.engine.optim import make_scaler, optimizer_step
from srkd.errors import SrkdError
from srkd.evaluation import Bicubic, evaluate_model
from srkd.models import build_model, to_channels_last
from srkd.precision import AMP_DTYPES, native_bf16, precision_warning, resolve_precision

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment; first match wins.
GPU_PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
    ("RTX 3090", 71.0),
)


@dataclass(frozen=True)
class Setting:
    teacher: dict[str, Any]
    student: dict[str, Any]
    scale: int
    batch_size: int
    lr_patch: int


FULL = Setting(
    teacher={"n_feats": 64, "n_resblocks": 32},
    student={"n_feats": 16, "n_resblocks": 32},
    scale=4,
    batch_size=16,
    lr_patch=48,
)
QUICK = Setting(
    teacher={"n_feats": 8, "n_resblocks": 2}, student={"n_feats": 4, "n_resblocks": 2}, scale=4, batch_size=2, lr_patch=12
)


def sample_sampler(scale: int, lr_patch: int, batch_size: int, seed: int = 0, split: str = "train") -> Any:
    """:class:`~srkd.data.sampler.PatchSampler` over the photos bundled with scikit-image (no download needed);
    ``split="val"`` (two small photos) makes it quicker to build for smoke tests."""
    named = sample_images(split)
    return PatchSampler(
        [img for _, img in named], scale, lr_patch, batch_size, seed=seed, names=[n for n, _ in named]
    )


def build_pair(setting: Setting, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(teacher, student) EDSRs with seeded random weights (speed does not depend on the values)."""
    torch.manual_seed(seed)
    teacher = build_model("edsr", scale=setting.scale, **setting.teacher)
    student = build_model("edsr", scale=setting.scale, **setting.student)
    return teacher, student


# -- srkd's step -------------------------------------------------------------------------------------------
class SrkdStep:
    """One iteration exactly as :func:`srkd.engine.trainer.train` runs it (:func:`srkd.engine.optim.optimizer_step`),
    without logging, checkpoints and the cross-rank checks."""

    def __init__(
        self,
        method_name: str,
        student: nn.Module,
        teacher: nn.Module | None,
        scale: int,
        device: torch.device,
        precision: str = "auto",  # the engine's: bf16 where the device has bf16 kernels, else fp32
        channels_last: bool = True,
        compile_mode: str | None = None,
        method_overrides: dict[str, Any] | None = None,
    ) -> None:
        module = get_method(method_name)
        cfg = module.Config(**(method_overrides or {}))
        self.method = module.Method(student, teacher, cfg, scale).to(device)
        self.channels_last = channels_last
        if channels_last:
            to_channels_last(self.method)
        self.method.train()
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.amp = AMP_DTYPES.get(self.precision)
        self.params = list(self.method.trainable_parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=1e-4, betas=(0.9, 0.99))
        self.scaler = make_scaler(device, self.precision)
        if compile_mode is not None:
            self.method.student = torch.compile(self.method.student, mode=compile_mode)
            if self.method.teacher is not None:
                self.method.teacher = torch.compile(self.method.teacher, mode=compile_mode)

    def __call__(self, batch: Batch) -> torch.Tensor:
        batch = batch.to(self.device, torch.channels_last if self.channels_last else None)
        return optimizer_step(self.method, batch, self.optimizer, self.params, self.scaler, self.amp).loss


# -- the BasicSR-style baseline ------------------------------------------------------------------------------
class BasicSRStep:
    """The public code's iteration, rewritten for this benchmark (see the module docstring for what it does).

    ``pix_weight``/``kd_weight`` follow srkd's defaults of the same method, so both sides optimise the same
    terms; the only extra term is the public code's L1(S(zoom-out), LR), which costs one L1 on a small tensor.
    """

    def __init__(
        self,
        method_name: str,
        student: nn.Module,
        teacher: nn.Module,
        scale: int,
        device: torch.device,
        imresize: Callable[..., Any],
        pix_weight: float,
        augment_p: float = 0.3,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
    ) -> None:
        if method_name not in ("kd", "dukd"):
            raise SrkdError(f"no BasicSR-style baseline for method '{method_name}'")
        self.method_name = method_name
        self.net_g = student.to(device).train()
        self.net_t = teacher.to(device).train()  # never frozen, never eval(): as in the public code
        self.scale, self.device, self.imresize = scale, device, imresize
        self.pix_weight, self.augment_p = pix_weight, augment_p
        self.optimizer = torch.optim.Adam(self.net_g.parameters(), lr=lr, betas=betas, eps=eps)

    def __call__(self, batch: Batch) -> torch.Tensor:
        assert batch.hr is not None
        lq, gt = batch.lr.to(self.device), batch.hr.to(self.device)
        # HR and KD terms: a first backward and optimiser step
        self.optimizer.zero_grad()
        out = self.net_g(lq)
        out_t = self.net_t(lq)  # recorded by autograd: the backward runs through the teacher as well
        loss = self.pix_weight * F.l1_loss(out, gt) + F.l1_loss(out, out_t)
        loss.backward()
        self.optimizer.step()
        if self.method_name == "kd":
            return loss.detach()

        # zoom-in on one tile of the HR grid, then zoom-out; a second backward and step without zero_grad
        n, _, h, w = lq.shape
        s = self.scale
        i, j = divmod(int(torch.randint(0, s * s, (1,))), s)
        gt_sub = gt[..., i * h : (i + 1) * h, j * w : (j + 1) * w].contiguous()
        sr_t_sub = self.net_t(gt_sub)
        ops = self._random_ops(n)
        sr_g_sub = self._undo(self.net_g(self._apply(gt_sub, ops)), ops)
        loss2 = F.l1_loss(sr_g_sub, sr_t_sub)
        # zoom-out: BasicSR's imresize on the CPU, one image at a time, then back to the device
        lqlq = torch.stack([self.imresize(img, 1 / s) for img in lq.detach().cpu()]).to(self.device)
        sr_lqlq = self.net_g(lqlq)
        loss2 = loss2 + self.pix_weight * F.l1_loss(sr_lqlq, lq) + F.l1_loss(sr_lqlq, self.net_t(lqlq))
        loss2.backward()
        self.optimizer.step()
        return (loss + loss2).detach()

    def _random_ops(self, n: int) -> dict[str, torch.Tensor]:
        return {op: torch.nonzero(torch.rand(n) < self.augment_p).flatten() for op in ("invert", "h", "v", "t")}

    def _apply(self, x: torch.Tensor, ops: dict[str, torch.Tensor]) -> torch.Tensor:
        x = x.clone()
        x[ops["invert"]] = 1.0 - x[ops["invert"]]
        x[ops["h"]] = x[ops["h"]].flip(-2)
        x[ops["v"]] = x[ops["v"]].flip(-1)
        x[ops["t"]] = x[ops["t"]].transpose(-2, -1)
        return x

    def _undo(self, x: torch.Tensor, ops: dict[str, torch.Tensor]) -> torch.Tensor:
        x = x.clone()
        x[ops["t"]] = x[ops["t"]].transpose(-2, -1)
        x[ops["v"]] = x[ops["v"]].flip(-1)
        x[ops["h"]] = x[ops["h"]].flip(-2)
        x[ops["invert"]] = 1.0 - x[ops["invert"]]
        return x


# -- FLOPs and MFU -----------------------------------------------------------------------------------------
def count_step_flops(step: Callable[[Batch], Any], batch: Batch) -> float:
    """FLOPs (2 per multiply-accumulate) of one call of ``step``: forward and backward of every network."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return float(counter.get_total_flops())


def device_peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None  # a CPU's bf16 peak depends on clocks and cores in use; pass --peak-tflops to get an MFU
    name = torch.cuda.get_device_name(device)
    for fragment, peak in GPU_PEAK_BF16_TFLOPS:
        if fragment in name:
            return peak
    return None


# -- the benchmark -----------------------------------------------------------------------------------------
def _compile_mode(opts: BenchOptions, device: torch.device) -> str | None:
    if opts.extra.get("cuda_graphs"):
        if device.type != "cuda":
            raise SrkdError("--cuda-graphs needs --device cuda")
        return "reduce-overhead"
    return "default" if opts.extra.get("compile") else None


def _compare(
    name: str,
    setting: Setting,
    device: torch.device,
    batch: Batch,
    basicsr_imresize: Callable[..., Any],
    repeats: int,
    compile_mode: str | None,
    peak: float | None,
) -> dict[str, Any]:
    """One method: both steps from the same initial weights, interleaved; FLOPs counted on the warm-up call."""
    teacher, student = build_pair(setting)
    base_teacher, base_student = copy.deepcopy(teacher), copy.deepcopy(student)
    ours = SrkdStep(name, student, teacher, setting.scale, device)
    pix_weight = float(ours.method.cfg.pix_weight)
    baseline = BasicSRStep(name, base_student, base_teacher, setting.scale, device, basicsr_imresize, pix_weight)

    # Untimed first calls (kernel selection), counting each side's FLOPs on the way.
    torch.manual_seed(1)
    flops_ours = count_step_flops(ours, batch)
    flops_base = count_step_flops(baseline, batch)
    if compile_mode is not None:
        ours = SrkdStep(name, ours.method.student, ours.method.teacher, setting.scale, device,
                        compile_mode=compile_mode)
        ours(batch)  # compilation happens here, outside the timed loop
    # the FLOP-counting calls above were the warm-up (compiled steps warmed up just now)
    timing = interleaved({"baseline": lambda: baseline(batch), "ours": lambda: ours(batch)},
                         repeats=repeats, warmup=0, device=device)
    row = comparison(name, timing["baseline"], timing["ours"],
                     baseline_label="BasicSR-style: fp32 NCHW, teacher in train mode with grad, CPU numpy zoom-out",
                     ours_label=("bf16 autocast" if ours.precision == "bf16" else ours.precision)
                     + " + channels_last, frozen teacher under no_grad, one backward"
                     + (f", torch.compile({compile_mode})" if compile_mode else ""))
    tflops = flops_ours / timing["ours"]["median_s"] / 1e12
    row.update({
        "flops_per_step_ours": flops_ours,
        "flops_per_step_baseline": flops_base,
        "tflops_ours": tflops,
        "tflops_baseline": flops_base / timing["baseline"]["median_s"] / 1e12,
        "mfu_ours": (tflops / peak) if peak else None,
    })
    return row


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    setting = QUICK if opts.quick else FULL
    repeats = opts.reps(default=3)
    methods = opts.extra.get("methods") or ["dukd", "kd"]
    ref = basicsr_reference()
    sampler = sample_sampler(setting.scale, setting.lr_patch, setting.batch_size, split="val" if opts.quick else "train")
    batch = sampler.batch(0)
    compile_mode = _compile_mode(opts, device)
    peak = device_peak_tflops(device, opts.extra.get("peak_tflops"))

    rows = [_compare(name, setting, device, batch, ref.imresize, repeats, compile_mode, peak) for name in methods]
    goal = 2.0 if device.type == "cuda" else 4.0
    targets = [target(f"{r['name']} step speed-up vs BasicSR-style", speedup(r), ">=", goal, r["ratio_cpu"]) for r in rows]
    if device.type == "cuda":
        targets += [target(f"{r['name']} MFU (conv student)", r["mfu_ours"], ">=", 0.40) for r in rows]
    return {
        "config": {
            "teacher": {"arch": "edsr", **setting.teacher},
            "student": {"arch": "edsr", **setting.student},
            "scale": setting.scale,
            "batch_size": setting.batch_size,
            "lr_patch": setting.lr_patch,
            "repeats": repeats,
            "data": "srkd samples-train (scikit-image photos)",
            "compile": compile_mode,
        },
        "comparisons": rows,
        "metrics": {"peak_tflops": peak},
        "targets": targets,
    }


def describe(result: dict[str, Any]) -> list[str]:
    lines = []
    for r in result["comparisons"]:
        mfu = f", MFU {r['mfu_ours']:.0%}" if r.get("mfu_ours") else ""
        lines.append(
            f"{r['name']:>5} step: BasicSR-style {fmt_s(r['baseline']['median_s'])}, srkd {fmt_s(r['ours']['median_s'])}"
            f" -> {ratio_text(r)}; srkd {r['tflops_ours']:.3f} TFLOP/s{mfu}"
        )
    return lines


# -- accuracy side: bf16 vs fp32 student after a short run -----------------------------------------------------
# "fp32-cl" is the control: fp32 again, in channels_last, so oneDNN sums the same products in another order. Its
# only difference from the fp32 run is rounding at the 1e-7 level; how far it drifts from fp32 after the run is
# how much the training trajectory amplifies *any* perturbation, the floor under which bf16 cannot be judged.
PRECISION_RUNS = {"fp32": ("fp32", False), "fp32-cl": ("fp32", True), "bf16": ("bf16", True)}  # (precision, channels_last)

def run_accuracy(opts: BenchOptions) -> dict[str, Any]:
    """Train the same student twice (same init, batches and random draws), in fp32 and in bf16; compare PSNR.

    The teacher is MATLAB bicubic by default: an untrained EDSR teacher would make the KD target noise, and no
    pretrained x4 EDSR ships with srkd; ``--teacher CHECKPOINT`` uses a trained one. The student is evaluated in
    fp32 on the bundled validation photos (Y channel, x4, border 4) every ``steps // 4`` iterations. With several
    ``--seeds`` (initial weights, batches and draws all change with the seed), the spread of the fp32 results
    across seeds shows how large a difference ordinary run-to-run variation makes at this budget. Each seed also
    trains the fp32 control of ``PRECISION_RUNS``.
    """
    device = resolve_bench_device(opts.device)
    setting = QUICK if opts.quick else FULL
    steps = int(opts.extra.get("steps") or (4 if opts.quick else 200))
    if steps < 1:
        raise SrkdError(f"--steps must be >= 1, got {steps}")
    seeds = list(opts.extra.get("seeds") or [0])
    teacher_spec = opts.extra.get("teacher") or "bicubic"
    method = opts.extra.get("method") or "dukd"
    every = max(1, steps // 4)
    checkpoints = sorted({0, *range(every, steps + 1, every), steps})
    # This benchmark trains in bf16 by design, so it runs where bf16 is emulated too; say what that costs.
    slow = precision_warning("bf16", device, fix="the bf16 runs still measure its accuracy, in several times the time")
    if slow:
        print(f"warning: {slow}", file=sys.stderr, flush=True)

    def make_teacher() -> nn.Module:
        if teacher_spec == "bicubic":
            return Bicubic(setting.scale)
        return load_model(teacher_spec, scale=setting.scale)[0]

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="srkd-bench-") as cache:
        for seed in seeds:
            sampler = sample_sampler(setting.scale, setting.lr_patch, setting.batch_size, seed=seed,
                                     split="val" if opts.quick else "train")
            for run_name, (precision, channels_last) in PRECISION_RUNS.items():
                torch.manual_seed(seed)
                student = build_model("edsr", scale=setting.scale, **setting.student)
                step = SrkdStep(method, student, make_teacher(), setting.scale, device, precision=precision,
                                channels_last=channels_last)
                torch.manual_seed(seed + 1)  # crops and augmentations: the same draws in both runs
                curve, losses = {}, []
                for it in range(steps + 1):
                    if it in checkpoints:
                        res = evaluate_model(step.method.student, ["samples-val"], setting.scale, device=device,
                                             precision="fp32", cache_dir=cache, progress=False)
                        curve[it] = res["samples-val"]["psnr_y"]
                        print(f"  seed {seed} {run_name} iteration {it}/{steps}: PSNR-Y {curve[it]:.3f} dB",
                              file=sys.stderr, flush=True)
                    if it < steps:
                        losses.append(float(step(sampler.batch(it))))
                runs.append({"seed": seed, "precision": run_name, "psnr_y": curve, "final_psnr_y": curve[steps],
                             "final_loss": losses[-1]})
    final = {(r["seed"], r["precision"]): r["final_psnr_y"] for r in runs}
    per_seed = [{"seed": s, "bf16_minus_fp32_db": final[s, "bf16"] - final[s, "fp32"],
                 "control_minus_fp32_db": final[s, "fp32-cl"] - final[s, "fp32"]} for s in seeds]
    diffs = [p["bf16_minus_fp32_db"] for p in per_seed]
    diff = sum(diffs) / len(diffs)
    # How far the mean could be from the true bias: single runs scatter (a run's trajectory diverges from tiny
    # perturbations; the control shows how much), so a mean over few seeds needs its own error bar.
    sem = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    control = sum(abs(p["control_minus_fp32_db"]) for p in per_seed) / len(per_seed)
    fp32_finals = [final[s, "fp32"] for s in seeds]
    return {
        "config": {
            "method": method,
            "teacher": teacher_spec,
            "student": {"arch": "edsr", **setting.student},
            "scale": setting.scale,
            "batch_size": setting.batch_size,
            "lr_patch": setting.lr_patch,
            "steps": steps,
            "seeds": seeds,
            "optimizer": "Adam lr 1e-4 betas (0.9, 0.99)",
            "eval": "samples-val (astronaut, chelsea), PSNR-Y, border = scale, fp32 inference",
            "bf16_native": native_bf16(device),  # False: emulated bf16 (same rounding, slower)
        },
        "comparisons": [],
        "metrics": {
            "runs": runs,
            "per_seed": per_seed,
            "psnr_bf16_minus_fp32_db": diff,
            "psnr_bf16_minus_fp32_sem_db": sem,
            "fp32_seed_spread_db": max(fp32_finals) - min(fp32_finals) if len(seeds) > 1 else None,
            "control_abs_minus_fp32_db_mean": control,
        },
        "targets": [target("|PSNR bf16 - fp32| after the run, mean over seeds (dB)", abs(diff), "<=", 0.02)],
    }


def describe_accuracy(result: dict[str, Any]) -> list[str]:
    m = result["metrics"]
    lines = []
    for r in m["runs"]:
        curve = ", ".join(f"{k}: {v:.3f}" for k, v in r["psnr_y"].items())
        lines.append(f"seed {r['seed']} {r['precision']}: PSNR-Y by iteration {{{curve}}} dB")
    steps = result["config"]["steps"]
    for p in m["per_seed"]:
        lines.append(f"seed {p['seed']}: bf16 - fp32 after {steps} steps: {p['bf16_minus_fp32_db']:+.4f} dB")
    for p in m["per_seed"]:
        if "control_minus_fp32_db" in p:
            lines.append(f"seed {p['seed']}: control (fp32 channels_last) - fp32 after {steps} steps: "
                         f"{p['control_minus_fp32_db']:+.4f} dB (summation order alone)")
    if m["fp32_seed_spread_db"] is not None:
        lines.append(f"fp32 final PSNR spread across seeds: {m['fp32_seed_spread_db']:.4f} dB (run-to-run variation)")
    if m.get("psnr_bf16_minus_fp32_sem_db") is not None:
        lines.append(f"bf16 - fp32, mean over {len(m['per_seed'])} seeds: {m['psnr_bf16_minus_fp32_db']:+.4f} "
                     f"+/- {m['psnr_bf16_minus_fp32_sem_db']:.4f} dB (standard error of the mean)")
    return lines
