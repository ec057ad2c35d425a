"""Tables from ``srkd bench --json`` results: one file as Markdown, or two side by side.

    python benchmarks/compare.py benchmarks/results/bench-cpu-2026-11-21.json          # Markdown table
    python benchmarks/compare.py OLD.json NEW.json                                     # ratios, old vs new

Each row is one baseline-vs-srkd comparison: median times, the paired wall-clock ratio (median over the
interleaved rounds of baseline / srkd: what targets are judged by), the ratio of the wall-clock medians and the
CPU-time ratio, then the targets. Only the standard library is used, so results can be
read on a machine without torch.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def fmt_ratio(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}x"


def paired(row: dict[str, Any]) -> float | None:
    """The stored ``ratio_paired``; for result files written before it existed, the same median from the times."""
    if row.get("ratio_paired") is not None:
        return float(row["ratio_paired"])
    base, ours = row["baseline"].get("times_s", []), row["ours"].get("times_s", [])
    if len(base) != len(ours) or len(base) < 2 or not all(o > 0 for o in ours):
        return None
    return statistics.median(b / o for b, o in zip(base, ours))


def rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, row) for name, res in report["results"].items() for row in res["comparisons"]]


def header(report: dict[str, Any]) -> str:
    m = report["machine"]
    loads = {n: r.get("load_avg_before") for n, r in report["results"].items()}
    return (
        f"{report['date']}, commit {report['commit']}{' (+ uncommitted changes)' if report.get('dirty') else ''}, "
        f"{m['cpu']} ({m['cpu_cores']} cores, {', '.join(m['cpu_flags'])}), torch {m['torch']}, "
        f"{m['torch_threads']} threads, device {m['device']}; load average (1/5/15 min) before each: {loads}"
    )


def table(report: dict[str, Any]) -> str:
    lines = [
        header(report),
        "",
        "| benchmark | comparison | baseline | srkd | speed-up (paired) | speed-up (medians) | speed-up (CPU time) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows(report):
        lines.append(
            f"| {name} | {row['name']} | {fmt_s(row['baseline']['median_s'])} | {fmt_s(row['ours']['median_s'])} "
            f"| {fmt_ratio(paired(row))} | {fmt_ratio(row['ratio'])} | {fmt_ratio(row.get('ratio_cpu'))} |"
        )
    lines += ["", "What the two sides are:", ""]
    for name, row in rows(report):
        lines.append(f"- {name} / {row['name']}: baseline = {row.get('baseline_label', '?')}; "
                     f"srkd = {row.get('ours_label', '?')}")
    lines += ["", "| benchmark | target | value | met |", "|---|---|---|---|"]
    for name, res in report["results"].items():
        for t in res["targets"]:
            value = t["value"] if isinstance(t["value"], str) else f"{t['value']:.4g}"
            if t.get("cpu_value") is not None:
                value += f" (CPU time {t['cpu_value']:.4g})"
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            what = t["what"].replace("|", "\\|")  # |x| would end the Markdown cell
            lines.append(f"| {name} | {what} {t['op']} {t['target']:g} | {value} | {met} |")
    return "\n".join(lines)


def compare(old: dict[str, Any], new: dict[str, Any]) -> str:
    before = {(n, r["name"]): r for n, r in rows(old)}
    lines = [
        f"old: {header(old)}",
        f"new: {header(new)}",
        "",
        "| benchmark | comparison | old paired | new paired | old medians | new medians | old CPU-time | new CPU-time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows(new):
        prev = before.get((name, row["name"]), {})
        lines.append(
            f"| {name} | {row['name']} | {fmt_ratio(paired(prev) if prev else None)} | {fmt_ratio(paired(row))} "
            f"| {fmt_ratio(prev.get('ratio'))} | {fmt_ratio(row['ratio'])} "
            f"| {fmt_ratio(prev.get('ratio_cpu'))} | {fmt_ratio(row.get('ratio_cpu'))} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    reports = [json.loads(Path(p).read_text()) for p in argv]
    print(table(reports[0]) if len(reports) == 1 else compare(*reports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
