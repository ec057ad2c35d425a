"""Data pipeline: does the training sampler deliver batches faster than the student consumes them?

The producer is :class:`~srkd.data.sampler.PatchSampler` (batch 16, LR 48, x4, with flips/rotations) over the
bundled photos; the consumer is the cheapest training step srkd runs with that batch, training the EDSR
16f/32b student from scratch (no teacher) in the engine's precision (auto) + channels_last. Every distillation step costs more than
that, so if the sampler keeps up with it, it keeps up with all of them. Both run in one thread of control,
interleaved; "ratio" is step time / batch time (how many batches the sampler makes while one step runs).
"""

from __future__ import annotations

from typing import Any

from srkd.bench.common import (
    BenchOptions,
    comparison,
    fmt_s,
    interleaved,
    resolve_bench_device,
    speedup,
    target,
)
from srkd.bench.kd_step import FULL, QUICK, SrkdStep, build_pair, sample_sampler


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    setting = QUICK if opts.quick else FULL
    repeats = opts.reps(default=10, quick=2)
    sampler = sample_sampler(setting.scale, setting.lr_patch, setting.batch_size, split="val" if opts.quick else "train")
    _teacher, student = build_pair(setting)
    step = SrkdStep("scratch", student, None, setting.scale, device)
    batch = sampler.batch(0)
    counter = iter(range(10**9))
    timing = interleaved(
        {"step": lambda: step(batch), "sampler": lambda: sampler.batch(next(counter))},
        repeats=repeats, warmup=1, device=device,
    )
    row = comparison("sampler vs step", timing["step"], timing["sampler"],
                     baseline_label=f"student training step (scratch, {step.precision} + channels_last)",
                     ours_label="PatchSampler.batch(step)")
    row["batches_per_s"] = 1.0 / timing["sampler"]["median_s"]
    row["steps_per_s"] = 1.0 / timing["step"]["median_s"]
    return {
        "config": {
            "student": {"arch": "edsr", **setting.student},
            "scale": setting.scale,
            "batch_size": setting.batch_size,
            "lr_patch": setting.lr_patch,
            "repeats": repeats,
            "images": len(sampler),
        },
        "comparisons": [row],
        "metrics": {},
        "targets": [target("sampler batches per student step", speedup(row), ">=", 1.0, row["ratio_cpu"])],
    }


def describe(result: dict[str, Any]) -> list[str]:
    r = result["comparisons"][0]
    return [
        f"sampler {fmt_s(r['ours']['median_s'])}/batch ({r['batches_per_s']:.0f} batches/s), student step "
        f"{fmt_s(r['baseline']['median_s'])} -> the sampler is {speedup(r):.0f}x faster than the step"
    ]
