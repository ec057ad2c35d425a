"""Where a training step's time goes: ``torch.profiler`` over warm steps of each step kind, by category.

Step kinds: DUKD, response KD and FAKD on the ``kd-step`` setting (EDSR 64f/32b teacher -> 16f/32b student, x4,
batch 16, LR 48, real patches drawn by the sampler every step, srkd's step as the engine runs it: ``SrkdStep``),
and the data-free method's student step and generator step on the ``datafree-step`` setting (the
``datafree-vdsr-quick`` recipe: VDSR 64x20 -> VDSR-half, x2, batch 16; :mod:`srkd.bench.datafree`).

Nothing inside the library is changed to be profiled. The benchmark labels, at its own call sites, the step and
the sampler's batch, and (through forward hooks on the networks) every forward of the teacher, the student and
the generator; autograd labels the backward (``autograd::engine::evaluate_function``), torch the optimiser
(``Optimizer.step``/``zero_grad``), and the profiler's Python tracer (``with_stack``) the Python function each op
was called from, which tells resizing and augmentation (``srkd/ops/imresize.py``, ``srkd/distill/augment.py``...)
from a loss's matrix product. srkd's C++ ``imresize`` kernels are called through ctypes, which the profiler
cannot see, so while profiling their entry points are wrapped in a label of their own.

Each op's *self* CPU time goes to one category, the first rule that matches:

1. ``backward``: inside the autograd engine (the student's backward; in the generator step the backward through
   teacher, student and generator);
2. ``casts and copies``: ``aten::copy_``/``to``/``_to_copy``/``contiguous``/``clone``... wherever they run (autocast's
   weight casts inside a forward, layout changes, batch transfers);
3. the innermost of: a network's forward (``teacher forward``/``student forward``/``generator forward``), a
   resizing or augmentation function (``augmentation and resizing``: the sampler, srkd's ``imresize`` and its C++
   kernels, DUKD's zoom-in/zoom-out and invertible augmentations), the optimiser (``optimiser``: torch's optimiser
   and grad scaler, gradient clipping);
4. ``optimiser`` again for anything after the step's backward (the gradient norm);
5. ``loss and other ops``: everything else (loss terms, random draws, bookkeeping).

``python overhead`` is the step's unprofiled wall time (median of the same number of steps, run just before)
minus the summed self time of every op: the time no op was running (interpreter, hooks, the method's control
flow). So the categories add up to the step's real wall time. The Python tracer slows the Python side down a
lot while profiling; ``total_profiled_ms`` and ``python_overhead_profiled_ms`` in the JSON show by how much.

How close each network runs to what the CPU can do (``networks`` in the JSON, the second table): its forwards'
FLOPs in one step (counted on the warm-up step), their unprofiled wall time (hooks, over the timed steps; casts
inside the forward included), the TFLOP/s that makes, and, measured in the same run, a bare 3x3 convolution at
the network's width on the tensor shape its busiest convolution sees, in the step's precision and in fp32. The
share of the first is the issue's yardstick ("the teacher at >= 50 % of the CPU's bf16 convolution throughput for
its width"): a throughput quoted from another run or another shape would compare two machines' moods.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from srkd.bench.common import BenchOptions, resolve_bench_device, synchronize
from srkd.bench.datafree import (
    RECIPE,
    SrkdDatafreeRound,
    build_student,
    generators_by_scale,
    make_teacher,
    recipe_config,
)
from srkd.bench.kd_step import FULL, QUICK, Setting, SrkdStep, build_pair, sample_sampler
from srkd.errors import SrkdError
from srkd.models import to_channels_last
from srkd.ops import native
from srkd.precision import AMP_DTYPES

KINDS = ("dukd", "kd", "fakd", "datafree-student", "datafree-generator")
CATEGORIES = (
    "teacher forward",
    "student forward",
    "generator forward",
    "backward",
    "optimiser",
    "augmentation and resizing",
    "casts and copies",
    "loss and other ops",
    "python overhead",
)
STEP = "srkd::step"
DATA = "srkd::data"
NATIVE = "srkd::native_imresize"
NETWORKS = ("teacher", "student", "generator")  # as the FORWARD labels end
FORWARD = {"srkd::forward:teacher": "teacher forward", "srkd::forward:student": "student forward",
           "srkd::forward:generator": "generator forward"}
CASTS = {"aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone", "aten::_copy_from",
         "aten::_copy_from_and_resize", "aten::to_dense", "aten::type_as"}
# Python files (as the profiler names frames: path from the package root) whose ops are resizing/augmentation or
# the optimiser's.
RESIZE_FILES = ("srkd/ops/imresize.py", "srkd/distill/augment.py", "srkd/distill/upcycle.py", "srkd/data/")
OPTIMISER_FILES = ("torch/optim/", "torch/nn/utils/clip_grad.py", "torch/amp/grad_scaler.py")
# --quick: kd-step's tiny setting with a body of 3 blocks, which FAKD's 3 feature segments need.
QUICK_KD = Setting({**QUICK.teacher, "n_resblocks": 3}, {**QUICK.student, "n_resblocks": 3}, QUICK.scale,
                   QUICK.batch_size, QUICK.lr_patch)
BACKWARD_PREFIX = "autograd::engine::evaluate_function"
OPTIMIZER_PREFIX = "Optimizer."


# -- labelling ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def labelled_forwards(modules: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """Every forward of each module inside a ``record_function`` of its label (hooks, removed afterwards)."""
    handles = []
    for label, module in modules:
        open_ranges: list[Any] = []

        def enter(_m: nn.Module, _args: Any, label: str = label, stack: list[Any] = open_ranges) -> None:
            rf = record_function(label)
            rf.__enter__()
            stack.append(rf)

        def leave(_m: nn.Module, _args: Any, _out: Any, stack: list[Any] = open_ranges) -> None:
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def labelled_native_kernels() -> Iterator[None]:
    """srkd's C++ kernels (ctypes calls, invisible to the profiler) inside a label of their own while profiling.

    ctypes caches each function it has looked up as an attribute of the library object, so after the warm-up
    steps every kernel the step uses is among the library's ``srkd_*`` attributes; replacing them (and putting
    them back) reaches every caller, which looks them up on that same cached object."""
    lib = native.library()
    if lib is None:
        yield
        return
    originals = {k: v for k, v in vars(lib).items() if k.startswith("srkd_") and callable(v)}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def labelled(*args: Any) -> Any:
            with record_function(NATIVE):
                return fn(*args)
        return labelled

    for name, fn in originals.items():
        setattr(lib, name, wrap(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(lib, name, fn)


# -- attribution -------------------------------------------------------------------------------------------
def _ancestors(event: Any) -> list[Any]:
    out, parent = [], event.cpu_parent
    while parent is not None:
        out.append(parent)
        parent = parent.cpu_parent
    return out


def _descendants(event: Any) -> list[Any]:
    out, todo = [], list(event.cpu_children)
    while todo:
        e = todo.pop()
        out.append(e)
        todo.extend(e.cpu_children)
    return out


def categorise(name: str, ancestors: list[str], after_backward: bool) -> str:
    """The category of an op's self time (module docstring); ``ancestors`` innermost first, Python frames
    included."""
    if name.startswith(BACKWARD_PREFIX) or any(a.startswith(BACKWARD_PREFIX) for a in ancestors):
        return "backward"
    if name in CASTS:
        return "casts and copies"
    for a in [name, *ancestors]:
        if a in FORWARD:
            return FORWARD[a]
        if a in (NATIVE, DATA) or _in_files(a, RESIZE_FILES):
            return "augmentation and resizing"
        if a.startswith(OPTIMIZER_PREFIX) or _in_files(a, OPTIMISER_FILES):
            return "optimiser"
    return "optimiser" if after_backward else "loss and other ops"


def _in_files(frame: str, files: tuple[str, ...]) -> bool:
    """Whether a Python frame (``srkd/ops/imresize.py(216): imresize``) is in one of ``files``."""
    return "(" in frame and any(f in frame for f in files)


def _is_op(event: Any) -> bool:
    """An op (or the native kernels' label), not a Python frame nor one of the benchmark's labels."""
    if getattr(event, "is_python_function", False) or event.name.startswith("<built-in"):
        return False
    return event.name == NATIVE or not event.name.startswith("srkd::")


def attribute_step(step_event: Any) -> tuple[dict[str, float], dict[tuple[str, str], float], float]:
    """(microseconds per op category, {(op name, category): microseconds}, the label's wall time) of one
    profiled step. An op is listed once per category it ran in (a convolution in the teacher's forward and in
    the student's are two entries), so the top ops name where their time went."""
    events = sorted(_descendants(step_event), key=lambda e: e.time_range.start)
    backward_end = max((e.time_range.end for e in events if e.name.startswith(BACKWARD_PREFIX)), default=None)
    totals: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
    per_op: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if not _is_op(e):
            continue
        after = backward_end is not None and e.time_range.start >= backward_end
        cat = categorise(e.name, [a.name for a in _ancestors(e)], after)
        totals[cat] += e.self_cpu_time_total
        per_op[(e.name, cat)] += e.self_cpu_time_total
    return totals, dict(per_op), step_event.time_range.end - step_event.time_range.start


# -- FLOPs, forward times and the bare-convolution reference -----------------------------------------------
@dataclass
class NetworkMeter:
    """Per network (label of :data:`FORWARD`): its forwards' wall time and FLOPs, and the 3x3 convolutions inside.

    FLOPs are 2 per multiply-accumulate, counted by ``torch.utils.flop_counter`` (the counter :func:`srkd.bench.
    kd_step.count_step_flops` uses) as the difference of the running total across each forward, so a step's
    backward, loss and resizing never count: only what the network's own forward computes. ``convs`` adds up
    the FLOPs of every stride-1 3x3 convolution by (in, out, input shape), so the reference convolution can be
    the one that does most of the network's arithmetic, on the very tensor shape it sees (the CPU teacher runs
    in chunks; a reference at another batch or size would be another workload)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    flops: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    convs: dict[str, dict[tuple[int, int, tuple[int, ...]], float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float)))


def _network(label: str) -> str:
    return label.rsplit(":", 1)[-1]


@contextlib.contextmanager
def metered_forwards(modules: list[tuple[str, nn.Module]], meter: NetworkMeter,
                     counter: FlopCounterMode | None = None) -> Iterator[None]:
    """Time every forward of each module into ``meter``; with a ``counter`` (active around the step), also its
    FLOPs and its 3x3 convolutions. Hooks, removed afterwards."""
    handles = []
    for label, module in modules:
        name = _network(label)
        start: list[tuple[float, float]] = []

        def enter(_m: nn.Module, _a: Any, start: list[tuple[float, float]] = start) -> None:
            start.append((time.perf_counter(), counter.get_total_flops() if counter is not None else 0.0))

        def leave(_m: nn.Module, _a: Any, _o: Any, name: str = name, start: list[tuple[float, float]] = start) -> None:
            t0, f0 = start.pop()
            meter.seconds[name] += time.perf_counter() - t0
            if counter is not None:
                meter.flops[name] += counter.get_total_flops() - f0

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
        if counter is None:
            continue
        for conv in module.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1) \
                    and conv.groups == 1:
                def seen(m: nn.Conv2d, args: Any, _o: Any, name: str = name) -> None:
                    n, _, h, w = args[0].shape
                    c_in, c_out = int(m.in_channels), int(m.out_channels)
                    meter.convs[name][(c_in, c_out, tuple(args[0].shape))] += 2.0 * n * h * w * c_in * c_out * 9
                handles.append(conv.register_forward_hook(seen))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def conv_tflops(c_in: int, c_out: int, shape: tuple[int, ...], dtype: torch.dtype, reps: int = 20) -> float:
    """TFLOP/s of a bare 3x3 convolution (padding 1) on ``shape``, channels_last, no grad, as the network runs
    it: under autocast to ``dtype`` (the input already in ``dtype``, as it arrives from the previous layer), or
    fp32. Median of ``reps`` calls after three warm-up calls (oneDNN picks its kernel on the first)."""
    conv = to_channels_last(nn.Conv2d(c_in, c_out, 3, padding=1))
    low = dtype != torch.float32
    x = torch.rand(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype if low else torch.bfloat16, enabled=low):
        for i in range(3 + reps):
            start = time.perf_counter()
            conv(x)
            if i >= 3:
                times.append(time.perf_counter() - start)
    n, _, h, w = shape
    return 2.0 * n * h * w * c_in * c_out * 9 / statistics.median(times) / 1e12


def network_rows(counted: NetworkMeter, timed: NetworkMeter, steps: int, precision: str) -> dict[str, dict[str, Any]]:
    """Per network: FLOPs (``counted``: one step) and forward time per step (``timed``: ``steps`` steps), achieved
    TFLOP/s, and the bare convolution at the network's
    width and busiest shape (:func:`conv_tflops`) in the step's precision and in fp32, with the share the
    network's forward achieves of it (the issue's target: the teacher at >= 50 % in bf16)."""
    dtypes = {"fp32": torch.float32}
    if precision in AMP_DTYPES:
        dtypes = {precision: AMP_DTYPES[precision], **dtypes}
    rows = {}
    for name, flops in sorted(counted.flops.items(), key=lambda kv: NETWORKS.index(kv[0])):
        ms = timed.seconds[name] / steps * 1e3
        row: dict[str, Any] = {"gflop_per_step": flops / 1e9, "forward_ms": ms,
                               "tflops": flops / (ms / 1e3) / 1e12 if ms > 0 else 0.0}
        if counted.convs.get(name):
            (c_in, c_out, shape), _ = max(counted.convs[name].items(), key=lambda kv: kv[1])
            ref = {k: conv_tflops(c_in, c_out, shape, d) for k, d in dtypes.items()}
            row.update({"width": c_out, "conv_in": c_in, "conv_shape": list(shape), "conv_tflops": ref,
                        "share_of_conv": row["tflops"] / ref[precision if precision in ref else "fp32"]})
        rows[name] = row
    return rows


# -- the step kinds ----------------------------------------------------------------------------------------
@dataclass
class Driver:
    """One step kind: ``step()`` runs one step as the engine would; ``modules`` are the networks to label."""

    kind: str
    step: Callable[[], Any]
    modules: list[tuple[str, nn.Module]]
    setting: dict[str, Any] = field(default_factory=dict)


def kd_driver(kind: str, opts: BenchOptions, device: torch.device) -> Driver:
    setting = QUICK_KD if opts.quick else FULL
    teacher, student = build_pair(setting)
    ours = SrkdStep(kind, student, teacher, setting.scale, device)
    sampler = sample_sampler(setting.scale, setting.lr_patch, setting.batch_size, split="val" if opts.quick else "train")
    counter = iter(range(10**9))

    def step() -> None:
        with record_function(DATA):
            batch = sampler.batch(next(counter))
        ours(batch)

    assert ours.method.teacher is not None
    return Driver(kind, step, [("srkd::forward:teacher", ours.method.teacher),
                               ("srkd::forward:student", ours.method.raw_student)],
                  {"teacher": {"arch": "edsr", **setting.teacher}, "student": {"arch": "edsr", **setting.student},
                   "scale": setting.scale, "batch_size": setting.batch_size, "lr_patch": setting.lr_patch,
                   "precision": ours.precision})


def datafree_driver(kind: str, opts: BenchOptions, device: torch.device) -> Driver:
    cfg = recipe_config(opts.extra.get("recipe") or RECIPE, opts.quick)
    teacher, label = make_teacher(cfg, opts.extra.get("teacher"), opts.quick)
    ours = SrkdDatafreeRound(cfg, build_student(cfg), teacher, device)
    ours.round()  # warm-up, and the method learns its autocast and batch size
    assert ours.method.teacher is not None
    modules = [("srkd::forward:teacher", ours.method.teacher), ("srkd::forward:student", ours.method.raw_student)]
    modules += [("srkd::forward:generator", g) for g in generators_by_scale(ours.method, cfg.scale).values()]
    step = ours.student_step if kind == "datafree-student" else ours.generator_step
    return Driver(kind, step, modules, {"recipe": cfg.name, "teacher": label,
                                        "student": {"arch": cfg.student.arch, **cfg.student.kwargs},
                                        "scale": cfg.scale, "batch_size": cfg.data.batch_size,
                                        "precision": ours.precision})


def make_driver(kind: str, opts: BenchOptions, device: torch.device) -> Driver:
    if kind not in KINDS:
        raise SrkdError(f"profile: unknown step kind {kind!r} (choose from {', '.join(KINDS)})")
    return datafree_driver(kind, opts, device) if kind.startswith("datafree") else kd_driver(kind, opts, device)


def profile_kind(driver: Driver, steps: int, device: torch.device) -> dict[str, Any]:
    """Warm-up (counting each network's FLOPs), the unprofiled median of ``steps`` steps (timing each network's
    forwards), the bare-convolution references, then ``steps`` profiled steps, averaged by category."""
    counted, timed = NetworkMeter(), NetworkMeter()
    with FlopCounterMode(display=False) as counter, metered_forwards(driver.modules, counted, counter):
        driver.step()
    plain = []
    with metered_forwards(driver.modules, timed):
        for _ in range(steps):
            synchronize(device)
            start = time.perf_counter()
            driver.step()
            synchronize(device)
            plain.append(time.perf_counter() - start)
    networks = network_rows(counted, timed, steps, str(driver.setting.get("precision", "fp32")))
    with labelled_native_kernels(), labelled_forwards(driver.modules), \
            profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        for _ in range(steps):
            with record_function(STEP):
                driver.step()
    step_events = [e for e in prof.events() if e.name == STEP]
    if not step_events:
        raise SrkdError("profile: the profiler recorded no step")
    sums: dict[str, float] = defaultdict(float)
    ops: dict[tuple[str, str], float] = defaultdict(float)
    walls = []
    for ev in step_events:
        totals, per_op, wall = attribute_step(ev)
        walls.append(wall)
        for k, v in totals.items():
            sums[k] += v
        for key, us in per_op.items():
            ops[key] += us
    n = len(step_events)
    ms = {k: sums[k] / n / 1e3 for k in CATEGORIES}
    profiled = statistics.fmean(walls) / 1e3
    ops_ms = sum(ms.values())
    unprofiled = statistics.median(plain) * 1e3
    ms["python overhead"] = max(0.0, unprofiled - ops_ms)
    total = sum(ms.values())  # the unprofiled step, or the ops' time if that was longer (noise)
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:12]
    return {
        "kind": driver.kind,
        "setting": driver.setting,
        "steps_profiled": n,
        "total_ms": total,
        "unprofiled_median_ms": unprofiled,
        "total_profiled_ms": profiled,
        "python_overhead_profiled_ms": profiled - ops_ms,
        "categories_ms": ms,
        "categories_share": {k: (v / total if total > 0 else 0.0) for k, v in ms.items()},
        "top_ops": [{"op": name, "category": cat, "ms_per_step": us / n / 1e3} for (name, cat), us in top],
        "networks": networks,
    }


def run(opts: BenchOptions) -> dict[str, Any]:
    device = resolve_bench_device(opts.device)
    if device.type != "cpu":
        raise SrkdError("profile: CPU only (it attributes CPU time; use --device cpu)")
    kinds = list(opts.extra.get("kinds") or KINDS)
    steps = int(opts.extra.get("steps") or (2 if opts.quick else 3))
    if steps < 1:
        raise SrkdError(f"--steps must be >= 1, got {steps}")
    rows = []
    for kind in kinds:
        torch.manual_seed(0)
        rows.append(profile_kind(make_driver(kind, opts, device), steps, device))
    return {
        "config": {"kinds": kinds, "steps": steps, "categories": list(CATEGORIES),
                   "native_imresize": native.status()},
        "comparisons": [],
        "metrics": {"profiles": rows},
        "targets": [],
    }


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: one row per step kind, each category in ms per step and its share, then the totals."""
    head = "| step | " + " | ".join(CATEGORIES) + " | total | profiled |"
    lines = [head, "|---" * (len(CATEGORIES) + 3) + "|"]
    for r in rows:
        cells = [f"{r['categories_ms'][c]:.1f} ms ({r['categories_share'][c]:.0%})" for c in CATEGORIES]
        lines.append(f"| {r['kind']} | " + " | ".join(cells)
                     + f" | {r['total_ms']:.1f} ms | {r['total_profiled_ms']:.1f} ms |")
    return lines


def network_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: per step kind and network, its forwards' FLOPs, time and TFLOP/s against the bare 3x3
    convolution at its width (step precision / fp32) and the share of the step-precision one."""
    lines = ["| step | network | GFLOP/step | forward ms | TFLOP/s | bare conv (width, shape) | conv TFLOP/s "
             "| share |", "|---" * 8 + "|"]
    for r in rows:
        for name, n in r.get("networks", {}).items():
            conv = ref = share = "-"
            if "conv_tflops" in n:
                conv = f"{n['conv_in']}->{n['width']}, {'x'.join(map(str, n['conv_shape']))}"
                ref = " / ".join(f"{v:.3f} ({k})" for k, v in n["conv_tflops"].items())
                share = f"{n['share_of_conv']:.0%}"
            lines.append(f"| {r['kind']} | {name} | {n['gflop_per_step']:.3g} | {n['forward_ms']:.1f} "
                         f"| {n['tflops']:.3f} | {conv} | {ref} | {share} |")
    return lines


def describe(result: dict[str, Any]) -> list[str]:
    rows = result["metrics"]["profiles"]
    lines = table(rows) + [""] + network_table(rows)
    for r in rows:
        ops = ", ".join(f"{o['op']} {o['ms_per_step']:.1f} ms ({o['category']})" for o in r["top_ops"][:5])
        lines.append(f"{r['kind']}: top ops {ops}")
    return lines
