"""``srkd info MODEL``: parameters, FLOPs (DUKD Table 1 convention: multiply-accumulates) and latency.

MODEL is an srkd checkpoint or an architecture spec ``arch[:key=value,...]``, e.g.
``edsr:n_feats=256,n_resblocks=32,res_scale=0.1,scale=4`` (values are YAML: ``depths=[6,6,6,6]`` works).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from srkd.cli.output import add_device_option, add_json_option, emit_json, pick_device
from srkd.errors import SrkdError
from srkd.models.spec import parse_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_CHECKPOINT", help="checkpoint file or arch[:key=value,...]")
    parser.add_argument("--input", default=None, metavar="CxHxW",
                        help="LR input shape (default: the model's channels x 256 x 256, as DUKD Table 1)")
    parser.add_argument("--scale", type=int, default=None, help="scale (multi-scale checkpoints, arch specs)")
    add_device_option(parser, "the latency run")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="latency precision")
    parser.add_argument("--iters", type=int, default=10, help="timed runs for the median latency (default 10)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    add_json_option(parser, "the numbers")


def parse_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise SrkdError(f"--input '{text}': expected CxHxW with positive integers, e.g. 3x256x256")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix.lower() in (".safetensors", ".pth", ".pt", ".mat", ".ckpt")


def load_any(spec: str, scale: int | None) -> tuple[Any, dict[str, Any]]:
    """A model from a checkpoint path or an ``arch[:k=v,...]`` spec, with a description for the report."""
    from srkd.checkpoint.io import load_model
    from srkd.models import ARCHITECTURES, build_model

    is_arch = spec.split(":", 1)[0].strip().lower() in ARCHITECTURES
    if Path(spec).exists() or spec.startswith("zoo:") or (_looks_like_path(spec) and not is_arch):
        model, meta = load_model(spec, scale=scale)
        return model, {"checkpoint": str(spec), "arch": meta["arch"], "kwargs": meta["kwargs"]}
    if not is_arch:
        raise SrkdError(
            f"'{spec}' is neither a checkpoint file nor an architecture (known: {', '.join(sorted(ARCHITECTURES))})"
        )
    arch, kwargs = parse_spec(spec)
    if scale is not None:
        kwargs["scale"] = scale
    model = build_model(arch, **kwargs).eval()
    return model, {"arch": arch.lower(), "kwargs": kwargs}


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def run(args: argparse.Namespace) -> int:
    from srkd.models.profile import count_flops, count_params, measure_latency

    if args.iters < 1:
        raise SrkdError(f"--iters must be >= 1, got {args.iters}")
    args.device = pick_device(args.device)
    if not args.no_latency:
        from srkd.evaluation.upscale import resolve_device

        resolve_device(args.device)  # an unusable device fails before any work
    say = print if args.json != "-" else _quiet  # --json -: the JSON is the whole of stdout
    model, report = load_any(args.model, args.scale)
    shape = parse_shape(args.input) if args.input else (int(getattr(model, "in_channels", 3)), 256, 256)
    report.update(
        scale=int(model.scale), input=list(shape), params=count_params(model), flops=count_flops(model, shape)
    )
    kwargs = ", ".join(f"{k}={v}" for k, v in report["kwargs"].items())
    say(f"model    {report['arch']}({kwargs})" + (f"  [{report['checkpoint']}]" if "checkpoint" in report else ""))
    say(f"params   {_human(report['params'])} ({report['params']:,})")
    say(f"FLOPs    {_human(report['flops'])} (multiply-accumulates, {'x'.join(map(str, shape))} input, x{model.scale})")
    if not args.no_latency:
        # Big models on small CPUs: one probe run sets how many timed runs fit in ~20 s (at least 3).
        probe = measure_latency(model, shape, device=args.device, warmup=1, iters=1, precision=args.precision)
        iters = args.iters if probe * args.iters <= 20 else max(3, min(args.iters, math.ceil(20 / probe)))
        latency = measure_latency(model, shape, device=args.device, warmup=0, iters=iters, precision=args.precision)
        report.update(latency_s=latency, latency_runs=iters, device=args.device, precision=args.precision)
        say(f"latency  {latency * 1e3:.1f} ms (median of {iters}, batch 1, {args.device}, {args.precision})")
    emit_json(args, report)
    return 0


def _quiet(*_args: object, **_kwargs: object) -> None:
    pass

