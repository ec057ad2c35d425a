"""``srkd bench NAME``: speed benchmarks, each against a baseline run in the same process (``benchmarks/README.md``).

Every benchmark prints absolute times and the ratio baseline / srkd (median of interleaved repetitions), then the
targets of the performance issue with met / missed. ``--json OUT`` writes everything, with the machine, commit,
date and load average, in the shape committed under ``benchmarks/results/``.
"""

from __future__ import annotations

import os

# Before torch starts its OpenMP pool: on a shared machine, threads that spin while waiting for a descheduled
# sibling make every parallel op crawl (both sides of a comparison alike); sleeping waiters keep CPU time honest.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from srkd.errors import SrkdError  # noqa: E402
from srkd.io import write_json  # noqa: E402


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from srkd.bench import BENCHMARKS

    names = ", ".join(f"{k} ({v[3]})" for k, v in BENCHMARKS.items())
    parser.add_argument("which", choices=[*BENCHMARKS, "all"], metavar="NAME",
                        help=f"one of: {names}; or all (every one but kd-accuracy)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu or cuda")
    parser.add_argument("--json", metavar="OUT|-",
                        help="write the results (and machine, commit, date) to OUT; results of other benchmarks "
                        "already in OUT from the same machine are kept. '-': the JSON alone on stdout (the "
                        "progress lines go to stderr)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="timed repetitions per side")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code path, measures nothing")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    parser.add_argument("--data-root", metavar="DIR", help="eval: folder holding Set5/HR, Set14/HR, B100/HR")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="eval/upscale inference precision (default fp32, as `srkd eval`/`srkd upscale`)")
    parser.add_argument("--model", metavar="CHECKPOINT", help="upscale: use this checkpoint instead of random EDSR")
    parser.add_argument("--methods", default=None, help="kd-step, time-to-psnr: comma-separated subset of dukd,kd")
    parser.add_argument("--steps", type=int, default=None,
                        help="kd-accuracy: training iterations (default 200); profile: profiled steps per kind "
                        "(default 3)")
    parser.add_argument("--teacher", default=None,
                        help="kd-accuracy: 'bicubic' (default) or a teacher checkpoint; datafree-step, profile: "
                        "the VDSR teacher (default: random VDSR 64x20); time-to-psnr: the EDSR teacher (default: "
                        "the recipe's file if present, else random)")
    parser.add_argument("--kinds", default=None,
                        help="profile: comma-separated step kinds (default all: dukd,kd,fakd,datafree-student,"
                        "datafree-generator)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="time-to-psnr: training minutes per method and loop (default 10)")
    parser.add_argument("--eval-every", type=float, default=None, metavar="SECONDS",
                        help="time-to-psnr: evaluate every SECONDS of training (default 60)")
    parser.add_argument("--loops", default=None, help="time-to-psnr: comma-separated subset of srkd,basicsr")
    parser.add_argument("--eval-set", default=None, help="time-to-psnr: evaluation set (default Set5)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="time-to-psnr: where the plot goes (default: beside --json OUT, else "
                        "./time-to-psnr.png)")
    parser.add_argument("--seeds", default=None, help="kd-accuracy: comma-separated seeds (default 0)")
    parser.add_argument("--compile", action="store_true", help="kd-step: torch.compile student and teacher")
    parser.add_argument("--cuda-graphs", action="store_true", help="kd-step (cuda): torch.compile reduce-overhead")
    parser.add_argument("--peak-tflops", type=float, default=None, help="kd-step: device peak for the MFU")


def run(args: argparse.Namespace) -> int:
    import torch

    from srkd.bench import ALL, get
    from srkd.bench.common import BenchOptions, fmt_s, report_header, resolve_bench_device, run_timed
    from srkd.cli.output import emit_json, pick_device, to_stdout

    args.device = pick_device(args.device)
    stdout_json = to_stdout(args)
    out = sys.stderr if stdout_json else sys.stdout  # --json -: stdout holds the JSON and nothing else

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    if args.threads is not None:
        if args.threads < 1:
            raise SrkdError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if methods and any(m not in ("dukd", "kd") for m in methods):
        raise SrkdError(f"--methods {args.methods}: choose from dukd, kd")
    try:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()] if args.seeds else None
    except ValueError:
        raise SrkdError(f"--seeds {args.seeds}: expected comma-separated integers, e.g. 0,1") from None
    extra = {
        "precision": args.precision, "model": args.model, "methods": methods, "steps": args.steps, "seeds": seeds,
        "teacher": args.teacher, "compile": args.compile, "cuda_graphs": args.cuda_graphs,
        "peak_tflops": args.peak_tflops, "kinds": _list(args.kinds), "minutes": args.minutes,
        "eval_every": args.eval_every, "loops": _list(args.loops), "eval_set": args.eval_set,
        "plot": args.plot or _default_plot(args.json),
    }
    opts = BenchOptions(device=args.device, repeats=args.repeats, quick=args.quick, data_root=args.data_root,
                        extra=extra)
    names = list(ALL) if args.which == "all" else [args.which]
    command = "srkd bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "bench" else [args.which])
    report = report_header(resolve_bench_device(args.device), command)
    report["machine"]["env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}
    if args.json and not stdout_json:
        report["results"] = previous_results(Path(args.json), report["machine"])
    # --json -: anything a benchmark prints goes to stderr, so stdout is the JSON document alone
    with contextlib.redirect_stdout(sys.stderr) if stdout_json else contextlib.nullcontext():
        for name in names:
            fn, describe = get(name)
            load = report["machine"]
            say(f"== {name} ({args.device}, {load['torch_threads']} threads){' [quick]' if args.quick else ''} ==")
            result = run_timed(name, fn, opts)
            result.update({k: report[k] for k in ("command", "date", "commit", "dirty")})
            report["results"][name] = result
            for line in describe(result):
                say("  " + line)
            if args.quick:
                say("  (--quick: tiny sizes; the speed targets below say nothing about real speed)")
            for t in result["targets"]:
                status = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
                value = "-" if t["value"] is None else f"{t['value']:.4g}"
                if t.get("cpu_value") is not None:
                    value += f" (CPU time: {t['cpu_value']:.4g}, {'met' if t['met_cpu'] else 'missed'})"
                say(f"  target: {t['what']} {t['op']} {t['target']:g}: {value} [{status}]")
            say(f"  wall {fmt_s(result['wall_s'])}, peak RSS {result['peak_rss_mb']:.0f} MB, "
                f"load avg {result['load_avg_before']} -> {result['load_avg_after']}")
            if args.json and not stdout_json:
                write_json(Path(args.json), _clean(report))  # after every benchmark: a crash later keeps what was measured
    if stdout_json:
        emit_json(args, _clean(report))
    return 0


def _list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _default_plot(json_out: str | None) -> str:
    """The time-to-psnr plot beside the JSON (``bench.json`` -> ``bench-time-to-psnr.png``)."""
    if json_out and json_out != "-":
        out = Path(json_out)
        return str(out.with_name(f"{out.stem}-time-to-psnr.png"))
    return "time-to-psnr.png"


def previous_results(path: Path, machine: dict[str, Any]) -> dict[str, Any]:
    """Results already in ``path`` from the same kind of machine, so that benchmarks run one at a time (or
    re-run) accumulate in one file; each result keeps its own command, date, commit and load average."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = isinstance(old, dict) and old.get("schema") == report_schema() and all(
        old.get("machine", {}).get(k) == machine.get(k) for k in ("cpu", "cpu_cores", "device", "torch")
    )
    return dict(old.get("results", {})) if same else {}


def report_schema() -> str:
    from srkd.bench.common import SCHEMA

    return SCHEMA


def _clean(value: Any) -> Any:
    """Strict JSON: infinite/NaN floats (a PSNR of identical images) become strings, keys strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
