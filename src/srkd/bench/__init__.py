"""Speed benchmarks against BasicSR-style baselines (``srkd bench``); see ``benchmarks/README.md``.

Each benchmark is a module with ``run(BenchOptions) -> dict`` and ``describe(result) -> list[str]``. Results share
one JSON shape: ``config``, ``comparisons`` (baseline vs srkd timings and their ratio), ``metrics`` and ``targets``
(the performance issue's goals and whether this run met them); :func:`srkd.bench.common.run_timed` adds wall time,
load average and peak RSS.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# name -> (module, run function, describe function, one-line description)
BENCHMARKS: dict[str, tuple[str, str, str, str]] = {
    "kd-step": ("srkd.bench.kd_step", "run", "describe", "DUKD and response-KD training step vs BasicSR-style"),
    "imresize": ("srkd.bench.resize", "run", "describe", "batched torch MATLAB bicubic vs BasicSR imresize"),
    "eval": ("srkd.bench.evaluation", "run", "describe", "Set5+Set14+B100 x4 evaluation, EDSR-64"),
    "upscale": ("srkd.bench.upscale", "run", "describe", "3840x2160 x4 tiled: peak RSS and seams"),
    "sampler": ("srkd.bench.sampler", "run", "describe", "training sampler vs student step"),
    "datafree-step": ("srkd.bench.datafree", "run", "describe",
                      "data-free round (student steps + generator step) vs the published DFSR code's way"),
    "profile": ("srkd.bench.profile", "run", "describe", "where each step kind's time goes, by category (CPU)"),
    "time-to-psnr": ("srkd.bench.ttp", "run", "describe",
                     "student PSNR against training minutes, srkd vs BasicSR-style loop (slow; PNG plot)"),
    "kd-accuracy": ("srkd.bench.kd_step", "run_accuracy", "describe_accuracy",
                    "student PSNR after a short run, bf16 vs fp32 (slow)"),
}
# `srkd bench all`: every speed ratio; not the profile (a table, no ratio) nor the slow accuracy and
# time-to-PSNR runs.
ALL = ("kd-step", "datafree-step", "imresize", "eval", "upscale", "sampler")


def get(name: str) -> tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any]], list[str]]]:
    module_name, run_name, describe_name, _ = BENCHMARKS[name]
    module = importlib.import_module(module_name)
    return getattr(module, run_name), getattr(module, describe_name)


__all__ = ["ALL", "BENCHMARKS", "get"]
