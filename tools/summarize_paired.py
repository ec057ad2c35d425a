"""Paired-seed summary of a sweep: PSNR per method and seed, and the paired differences with their spread.

    python tools/summarize_paired.py runs/real --iters 1000 --methods scratch kd dukd --json OUT.json

Reads ``<root>/<method>-s<seed>-<iters>/eval.json`` (written by ``srkd eval --json``) and prints, per set, the mean
PSNR of each method and, for each pair (b - a), the mean of the per-seed differences with its standard error
(standard deviation of the differences / sqrt(n)). Only seeds for which every method finished are used, so every
difference is paired. The JSON holds the per-seed values as well.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
from pathlib import Path


def load(root: Path, iters: int, methods: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    """{method: {seed: {set: psnr_y}}} for the finished runs."""
    out: dict[str, dict[int, dict[str, float]]] = {m: {} for m in methods}
    for path in sorted(root.glob(f"*-s*-{iters}/eval.json")):
        match = re.fullmatch(rf"(.+)-s(\d+)-{iters}", path.parent.name)
        if match and match.group(1) in out:
            sets = json.loads(path.read_text())
            out[match.group(1)][int(match.group(2))] = {name: v["psnr_y"] for name, v in sets.items()}
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return statistics.fmean(values), se


def summarize(results: dict[str, dict[int, dict[str, float]]]) -> dict:
    seeds = sorted(set.intersection(*(set(r) for r in results.values()))) if results else []
    methods = list(results)
    sets = list(results[methods[0]][seeds[0]]) if seeds else []
    summary: dict = {"seeds": seeds, "per_seed": {m: {s: results[m][s] for s in seeds} for m in methods},
                     "mean": {}, "paired": {}}
    for name in sets:
        summary["mean"][name] = {m: statistics.fmean(results[m][s][name] for s in seeds) for m in methods}
        for a, b in itertools.combinations(methods, 2):
            diffs = [results[b][s][name] - results[a][s][name] for s in seeds]
            mean, se = mean_se(diffs)
            summary["paired"].setdefault(f"{b} - {a}", {})[name] = {"mean": mean, "se": se, "diffs": diffs}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--iters", type=int, required=True)
    parser.add_argument("--methods", nargs="+", default=["scratch", "kd", "dukd"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    summary = summarize(load(args.root, args.iters, args.methods))
    print(f"seeds with every method finished: {summary['seeds']}")
    for name, means in summary["mean"].items():
        print(f"{name}: " + "  ".join(f"{m} {v:.3f}" for m, v in means.items()))
    for pair, per_set in summary["paired"].items():
        print(f"{pair}: " + "  ".join(f"{n} {d['mean']:+.3f} ± {d['se']:.3f}" for n, d in per_set.items()))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
