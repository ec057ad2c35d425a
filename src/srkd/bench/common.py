"""What every benchmark shares: interleaved timing, the machine record, peak memory, and the BasicSR reference.

Shared machines are noisy (other jobs come and go, CPU frequency moves), so a benchmark never reports one
absolute time on its own: the baseline and srkd's version run in the same process, alternating repetition by
repetition (A B, B A, A B...), and the ratio of the medians is the headline number. Absolute times, the best
(minimum) times and the load average before and after are recorded beside it so a reader can judge the noise.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from srkd.device import resolve_device
from srkd.errors import SrkdError

SCHEMA = "srkd-bench/1"
REPO = Path(__file__).resolve().parents[3]  # src/srkd/bench/common.py -> repository root (source checkouts)


@dataclass
class BenchOptions:
    """Options every benchmark understands (``srkd bench`` flags)."""

    device: str = "cpu"
    repeats: int | None = None  # None: the benchmark's own default
    quick: bool = False  # tiny sizes: a smoke test of the code path, not a measurement
    data_root: str | None = None  # folder holding Set5/Set14/B100 (each with HR/) for the eval benchmark
    extra: dict[str, Any] = field(default_factory=dict)  # benchmark-specific flags (--steps, --compile...)

    def reps(self, default: int, quick: int = 1) -> int:
        if self.repeats is not None:
            if self.repeats < 1:
                raise SrkdError(f"--repeats must be >= 1, got {self.repeats}")
            return self.repeats
        return quick if self.quick else default


def resolve_bench_device(device: str) -> torch.device:
    """srkd's device rule (:func:`srkd.device.resolve_device`), limited to what the benchmarks time: cpu or cuda."""
    dev = resolve_device(device, what="--device")
    if dev.type not in ("cpu", "cuda"):
        raise SrkdError(f"--device {device}: benchmarks run on cpu or cuda")
    return dev


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float], cpu_times: list[float] | None = None) -> dict[str, Any]:
    """Wall-clock statistics, plus the process CPU time (all threads) of the same calls when measured."""
    out: dict[str, Any] = {
        "times_s": [round(t, 6) for t in times],
        "median_s": statistics.median(times),
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
    }
    if cpu_times:
        out["cpu_times_s"] = [round(t, 6) for t in cpu_times]
        out["median_cpu_s"] = statistics.median(cpu_times)
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` once: its result and :func:`summarize` of its wall and CPU time."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, summarize([time.perf_counter() - start], [time.process_time() - start_cpu])


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Time each function ``repeats`` times, alternating between them; the order flips every round.

    ``warmup`` untimed rounds come first (oneDNN picks and caches its kernels on the first call of a shape).
    Besides wall-clock time, the process CPU time of each call is recorded: on a machine shared with other jobs
    the wall clock also counts the time spent waiting for a core, the CPU time only the work done (with
    ``OMP_WAIT_POLICY=PASSIVE``, which ``srkd bench`` sets, idle OpenMP threads sleep instead of spinning).
    Returns ``{name: summarize(times, cpu_times)}``.
    """
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    dev = device or torch.device("cpu")
    for r in range(warmup + repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            synchronize(dev)
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[name]()
            synchronize(dev)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return {n: summarize(times[n], cpu[n] if dev.type == "cpu" else None) for n in names}


def comparison(name: str, baseline: dict[str, Any], ours: dict[str, Any], **labels: str) -> dict[str, Any]:
    """One baseline-vs-srkd row: both timings and the speed-up (ratio of the wall-clock medians, of the
    minimums, of the median CPU times when both sides have them, and the paired ratio).

    ``ratio_paired`` is the median over rounds of baseline / srkd, the two timed back to back by
    :func:`interleaved`: each ratio compares timings taken under the same conditions, where the ratio of medians
    may pair a slow round of one side with a fast round of the other. That matters on these virtual machines,
    whose speed drifts within a run (2026-11-23: the baseline's CPU time for the same work swung from 128 to
    223 ms). It is what :func:`speedup` judges targets by.
    """
    row = {
        "name": name,
        **labels,
        "baseline": baseline,
        "ours": ours,
        "ratio": baseline["median_s"] / ours["median_s"],
        "ratio_best": baseline["min_s"] / ours["min_s"],
        "ratio_cpu": None,
        "ratio_paired": None,
    }
    if baseline.get("median_cpu_s") and ours.get("median_cpu_s"):
        row["ratio_cpu"] = baseline["median_cpu_s"] / ours["median_cpu_s"]
    pairs = list(zip(baseline["times_s"], ours["times_s"]))
    if len(baseline["times_s"]) == len(ours["times_s"]) > 1 and all(o > 0 for _, o in pairs):
        row["ratio_paired"] = statistics.median(b / o for b, o in pairs)
    return row


def speedup(row: dict[str, Any]) -> float:
    """The speed-up a target judges: the paired ratio where rounds were paired, else the ratio of medians."""
    return row["ratio_paired"] if row.get("ratio_paired") is not None else row["ratio"]


def target(what: str, value: float | None, op: str, goal: float, cpu_value: float | None = None) -> dict[str, Any]:
    """A target of the performance issue and whether this run met it (``None`` value: not measured).

    ``met`` judges ``value`` (wall clock); ``cpu_value``, the same quantity from CPU times, is recorded beside it
    (``met_cpu``) because on a shared machine it is the steadier of the two.
    """
    def judge(v: float | None) -> bool | None:
        return None if v is None else (v >= goal if op == ">=" else v <= goal)

    out = {"what": what, "value": value, "op": op, "target": goal, "met": judge(value)}
    if cpu_value is not None:
        out.update({"cpu_value": cpu_value, "met_cpu": judge(cpu_value)})
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives ``fork`` + ``exec``,
    so a fresh worker started by a big parent (``srkd bench all`` after the KD step) would report the parent's
    peak as its own. Elsewhere ``ru_maxrss`` (macOS reports bytes, Linux KiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The instruction-set extensions that decide CPU speed here (bf16 kernels need avx512_bf16 or AMX)."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def git_commit() -> dict[str, Any]:
    """Short commit and whether the working tree has uncommitted changes (read-only git calls).

    A copy of the tree without ``.git`` (a borrowed GPU machine gets one) names its commit in ``$SRKD_COMMIT``.
    """
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    if commit is None and os.environ.get("SRKD_COMMIT"):
        return {"commit": os.environ["SRKD_COMMIT"], "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_flags": _cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_gb"] = round(props.total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
    return info


def report_header(device: torch.device, command: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **git_commit(),
        "machine": machine_info(device),
        "results": {},
    }


def run_timed(name: str, fn: Callable[[BenchOptions], dict[str, Any]], opts: BenchOptions) -> dict[str, Any]:
    """Run one benchmark and wrap its result with wall time, load average and peak RSS."""
    load_before = load_average()
    start = time.perf_counter()
    result = fn(opts)
    return {
        "benchmark": name,
        "quick": opts.quick,
        **result,
        "wall_s": round(time.perf_counter() - start, 2),
        "load_avg_before": load_before,
        "load_avg_after": load_average(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


# -- the BasicSR 1.4.2 reference -----------------------------------------------------------------------------
def basicsr_reference() -> Any:
    """BasicSR 1.4.2's ``imresize``/``calculate_psnr``/``calculate_ssim``, read from its sdist at run time.

    The loader is the test suite's (``tests/reference.py``): the source files are executed from
    ``.ref/basicsr-1.4.2.tar.gz`` (``make dev`` fetches it; ``$SRKD_BASICSR_SDIST`` overrides), never copied into
    srkd. Baselines therefore need a source checkout with the dev extras.
    """
    loader = REPO / "tests" / "reference.py"
    if not loader.is_file():
        raise SrkdError(f"the BasicSR baselines need a source checkout of srkd ({loader} not found)")
    spec = importlib.util.spec_from_file_location("_srkd_bench_basicsr_reference", loader)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sdist = Path(module.SDIST)
    if not sdist.is_file():
        raise SrkdError(f"BasicSR 1.4.2 sdist not found at {sdist}: run `make dev` (or set SRKD_BASICSR_SDIST)")
    try:
        import cv2  # noqa: F401  (BasicSR's psnr_ssim imports it)  # inside: optional (dev extra)
    except ImportError:
        raise SrkdError("the BasicSR baselines need opencv-python-headless (pip install -e '.[dev]')") from None
    return module._cached(str(sdist))


def ratio_text(row: dict[str, Any], digits: int = 2) -> str:
    """``"4.04x (paired; medians 4.01x, best 4.10x, CPU time 6.01x)"`` for a :func:`comparison` row."""
    text = f"{speedup(row):.{digits}f}x ("
    if row.get("ratio_paired") is not None:
        text += f"paired; medians {row['ratio']:.{digits}f}x, "
    text += f"best {row['ratio_best']:.{digits}f}x"
    if row.get("ratio_cpu"):
        text += f", CPU time {row['ratio_cpu']:.{digits}f}x"
    return text + ")"


def fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"
