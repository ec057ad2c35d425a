"""Train several teachers at once on one borrowed GPU, each sized to fill a fixed wall-clock budget.

A lent GPU comes for minutes, not days, so a recipe's iteration count cannot be known in advance: this tool runs
every config concurrently for ``--probe`` iterations, reads each one's speed from its log (measured while all of
them share the device, as they will), then trains each for ``rate x budget`` iterations with its milestones at
50 / 75 / 90 % of them, and exports each run's EMA weights as an fp16 srkd model. The runs are ordinary
``srkd train`` runs (their folders hold the resolved config and the JSONL log).

    python tools/train_teachers_timed.py --minutes 14 --out OUT configs/teachers/*-gpu.yaml \
        [--data ../shared/data/train=/tmp/data] [--runs /tmp/teachers]

The shipped recipes name their data by registry name (T91, Set5...): on the device, point $SRKD_DATA at a root
where `srkd data link NAME FOLDER` put them; ``--data OLD=NEW`` remaps recipes that give folders instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from srkd.engine.logging import read_log

REPO = Path(__file__).resolve().parents[1]


def launch(cfg: Path, run_dir: Path, overrides: list[str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "srkd.cli.main", "train", str(cfg), "--out", str(run_dir), "--resume", "none"]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def run_all(jobs: dict[str, tuple[Path, Path, list[str], Path]]) -> None:
    """Start every ``name: (config, run folder, overrides, output file)`` at once and wait for all of them."""
    procs = {name: launch(cfg, run_dir, overrides, out) for name, (cfg, run_dir, overrides, out) in jobs.items()}
    for name, proc in procs.items():
        if proc.wait() != 0:
            for other in procs.values():  # no orphans training on after the tool gave up
                other.kill()
            out = jobs[name][3]
            sys.exit(f"{name} failed (exit {proc.returncode}); its output: {out}\n"
                     + out.read_text(errors="replace")[-3000:])


def speed(run_dir: Path) -> float:
    """Iterations per second over the probe's last logged window (the first includes start-up)."""
    rates = [r["it_s"] for r in read_log(run_dir / "log.jsonl") if r.get("type") == "train"]
    if not rates:
        sys.exit(f"{run_dir}: the probe logged no training speed")
    return float(rates[-1])


def plan(rate: float, minutes: float, floor: int) -> tuple[int, list[int]]:
    """Iterations that fill ``minutes`` at ``rate`` it/s (7 % kept for validation and checkpoints, rounded down to
    hundreds, at least ``floor``) and the milestones at 50 / 75 / 90 % of them. A milestone listed twice would
    apply its decay twice (``MultiStepLR`` counts repeats), so tiny budgets get each distinct one once."""
    iters = max(floor, int(rate * minutes * 60 * 0.93) // 100 * 100)
    return iters, sorted({m for m in (iters // 2, iters * 3 // 4, iters * 9 // 10) if m > 0})


def data_overrides(cfg_text: str, mapping: list[tuple[str, str]]) -> list[str]:
    """``data.train`` / ``data.val`` with each path prefix remapped (the device holds its own copy of the data)."""
    import yaml

    data = yaml.safe_load(cfg_text)["data"]
    out = []
    for key in ("train", "val"):
        paths = list(data.get(key) or [])
        for old, new in mapping:
            paths = [new + p[len(old):] if p.startswith(old) else p for p in paths]
        out.append(f"data.{key}=[{', '.join(paths)}]")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--minutes", type=float, required=True, help="training time after the probe")
    ap.add_argument("--probe", type=int, default=150, help="iterations of the speed probe")
    ap.add_argument("--log-every", type=int, default=50, help="log interval of the probe")
    ap.add_argument("--data", action="append", default=[], metavar="OLD=NEW", help="remap a data path prefix")
    ap.add_argument("--runs", type=Path, default=Path("runs/teachers-gpu"))
    ap.add_argument("--out", type=Path, required=True, help="where the fp16 models and a summary go")
    args = ap.parse_args()
    if any("=" not in item for item in args.data):
        ap.error("--data takes OLD=NEW")
    mapping = [(old, new) for old, new in (item.split("=", 1) for item in args.data)]
    args.out.mkdir(parents=True, exist_ok=True)
    names = {cfg: cfg.stem for cfg in args.configs}
    extra = {cfg: data_overrides(cfg.read_text(), mapping) for cfg in args.configs}

    t0 = time.time()
    args.runs.mkdir(parents=True, exist_ok=True)
    probe = {names[c]: args.runs / "probe" / names[c] for c in args.configs}
    run_all({names[c]: (c, probe[names[c]], extra[c] + [
        f"train.iterations={args.probe}", f"train.log_every={args.log_every}", "train.val_every=0",
        f"train.ckpt_every={args.probe}", "train.ema=null", "sched.milestones=[]"],
        args.runs / f"probe-{names[c]}.out") for c in args.configs})
    rates = {n: speed(d) for n, d in probe.items()}
    print(f"probe ({time.time() - t0:.0f} s): " + ", ".join(f"{n} {r:.2f} it/s" for n, r in rates.items()), flush=True)

    planned, jobs = {}, {}
    for cfg in args.configs:
        n = names[cfg]
        iters, miles = plan(rates[n], args.minutes, floor=args.probe)
        planned[n] = iters
        jobs[n] = (cfg, args.runs / n, extra[cfg] + [
            f"train.iterations={iters}", f"sched.milestones=[{', '.join(map(str, miles))}]",
            f"train.val_every={iters // 2}", f"train.ckpt_every={max(1, iters // 10)}"], args.runs / f"{n}.out")
    print("plan: " + ", ".join(f"{n} {i} iterations" for n, i in planned.items()), flush=True)
    t1 = time.time()
    run_all(jobs)
    print(f"trained in {time.time() - t1:.0f} s", flush=True)

    summary = {"probe_it_s": rates, "iterations": planned, "train_s": time.time() - t1, "files": {}}
    for n in planned:
        target = args.out / f"{n}.safetensors"
        subprocess.run([sys.executable, str(REPO / "tools" / "export_teacher.py"), str(args.runs / n), str(target),
                        "--ema"], check=True)
        for name in ("log.jsonl", "config.yaml"):
            (args.out / f"{n}.{name}").write_bytes((args.runs / n / name).read_bytes())
        summary["files"][n] = target.name
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
