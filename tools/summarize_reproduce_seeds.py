"""Per-seed and paired summary of `srkd reproduce` cells run with several seeds (one --out folder per seed).

    python tools/summarize_reproduce_seeds.py runs/reproduce/quick runs/reproduce/quick-seed1 \
        --cells datafree-vdsr datafree-vdsr-code --pairs datafree-vdsr-code:datafree-vdsr --json OUT.json

Reads ``<root>/<cell>/results.json`` (what `srkd reproduce` writes per trained cell: PSNR/SSIM per scale and set)
in each root, prints one row per cell, scale and set with each seed's PSNR and their mean, and for each pair
``b:a`` the mean of the per-seed differences b - a with its standard error (sd / sqrt(n); n = seeds where both
cells finished, so every difference is paired). Roots are taken in the order given: seed 0 first.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

Table = dict[str, dict[tuple[str, str], list[float | None]]]  # cell -> (scale, set) -> PSNR per root


def load(roots: list[Path], cells: list[str]) -> Table:
    out: Table = {c: {} for c in cells}
    for i, root in enumerate(roots):
        for cell in cells:
            path = root / cell / "results.json"
            if not path.exists():
                continue
            for scale, sets in json.loads(path.read_text())["results"].items():
                for name, v in sets.items():
                    row = out[cell].setdefault((scale, name), [None] * len(roots))
                    row[i] = float(v["psnr_y"])
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return statistics.fmean(values), se


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--cells", nargs="+", required=True)
    ap.add_argument("--pairs", nargs="*", default=[], metavar="B:A")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    table = load(args.roots, args.cells)
    print("| cell | scale | set | " + " | ".join(f"seed root {i}" for i in range(len(args.roots))) + " | mean |")
    print("|---|---|---|" + "---|" * (len(args.roots) + 1))
    for cell, rows in table.items():
        for (scale, name), vals in sorted(rows.items()):
            got = [v for v in vals if v is not None]
            print(f"| {cell} | x{scale} | {name} | " + " | ".join(fmt(v) for v in vals)
                  + f" | {fmt(statistics.fmean(got)) if got else '-'} |")
    pairs = {}
    for spec in args.pairs:
        b, a = spec.split(":")
        print(f"\n{b} - {a} (mean of paired differences ± standard error, n seeds):")
        for key in sorted(set(table[b]) & set(table[a])):
            diffs = [vb - va for vb, va in zip(table[b][key], table[a][key]) if vb is not None and va is not None]
            if diffs:
                m, se = mean_se(diffs)
                pairs[f"{b}-{a}:x{key[0]}:{key[1]}"] = {"diffs": diffs, "mean": m, "se": se}
                print(f"  x{key[0]} {key[1]}: {m:+.3f} ± {se:.3f} (n={len(diffs)}: "
                      + ", ".join(f"{d:+.2f}" for d in diffs) + ")")
    if args.json:
        rows = {f"{c}:x{s}:{n}": v for c, r in table.items() for (s, n), v in r.items()}
        args.json.write_text(json.dumps({"roots": [str(r) for r in args.roots], "psnr_y": rows, "pairs": pairs},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
