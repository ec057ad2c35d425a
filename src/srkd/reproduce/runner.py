"""Run a plan (:func:`execute`) and write its report in the paper's layout (:func:`write_report`).

References are measured first (they are cached and shared between tables), then each run is trained or resumed and
evaluated on its final weights; a finished cell is only read back. The report puts the measured table, the
published one and their difference first, then the figures of the runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from srkd.engine import trainer  # by module, so that a test can replace trainer.train
from srkd.errors import SrkdError
from srkd.report.build import build_report, results_section
from srkd.report.html import Section, Table, html_page, markdown_page
from srkd.report.runs import WEIGHTS, Run, evaluate_cached, load_run, read_results, resolve_sets
from srkd.report.tables import pivot_table
from srkd.reproduce.planner import Plan


def _entries(plan: Plan) -> list[dict[str, Any]]:
    """The measured numbers in the table's long format (only what is already measured)."""
    out = []
    for p in plan.cells:
        if p.results_file is None:
            continue
        model = p.model if p.cell.kind != "train" else (p.run_dir / WEIGHTS if p.run_dir else None)
        if model is None:
            continue
        res = read_results(p.results_file, model) if (model == "bicubic" or Path(model).is_file()) else {}
        for s in p.scales:
            for name in plan.sets:
                r = res.get(s, {}).get(name)
                if r is not None:
                    out.append({plan.table.label_key: p.cell.label, **dict(p.cell.row), "dataset": name, "scale": s,
                                "psnr": r["psnr_y"], "ssim": r["ssim_y"]})
    return out


def paper_sections(plan: Plan) -> list[Any]:
    """The table in the paper's layout: measured, published, and the PSNR difference."""
    t = plan.table
    measured = _entries(plan)
    order = list(dict.fromkeys(c.label for c in t.cells_of(plan.mode)))  # all cells, not just --only's
    col_order = order if t.column == t.label_key else None
    row_order = {"dataset": plan.sets} if "dataset" in t.rows else {}
    if t.label_key in t.rows:
        row_order[t.label_key] = order
    fmt = {"scale": lambda s: f"×{s}"}
    blocks: list[Any] = []
    within = t.rows.index(t.label_key) if t.label_key in t.rows else None
    if within is None:
        where = "of each row"
    else:
        group = " and ".join(t.rows[:within])
        where = f"of each column{f' per {group}' if group else ''}"
    aside = f", {' / '.join(t.references)} aside" if t.references else ""
    if measured:
        md, html = pivot_table(measured, t.rows, t.column, metrics=t.metrics, column_order=col_order,
                               row_order=row_order, fmt_row=fmt, no_best=t.references, best_within=within)
        blocks.append(Table(md, html, f"Measured with `srkd reproduce {t.key} --{plan.mode}` (PSNR dB / SSIM, Y "
                                      f"channel, border = scale); best {where} in bold{aside}."))
    else:
        blocks.append("Not shown: no cell is measured yet.")
    if t.paper:
        md, html = pivot_table(list(t.paper), t.rows, t.column, metrics=t.metrics, column_order=col_order,
                               row_order=row_order, fmt_row=fmt, no_best=t.references, best_within=within)
        blocks.append(Table(md, html, "Published in the paper."))
        keys = (*t.rows, t.column)
        published = {tuple(e[k] for k in keys): e for e in t.paper}
        diffs = [{**e, "dpsnr": e["psnr"] - published[tuple(e[k] for k in keys)]["psnr"]}
                 for e in measured if tuple(e[k] for k in keys) in published]
        if diffs:
            md, html = pivot_table(diffs, t.rows, t.column, metrics=(("dpsnr", "ΔPSNR"),), column_order=col_order,
                                   row_order=row_order, fmt_row=fmt, no_best=order, best_within=within)
            blocks.append(Table(md, html, "Measured minus published PSNR (dB)."))
    blocks += list(t.notes)
    if plan.mode == "quick":
        blocks.append("Note: --quick recipes are sized for a 2-core CPU (short schedules, smaller training sets); "
                      "expect lower numbers than the paper's.")
    return [Section(t.title, blocks)]


def execute(
    plan: Plan,
    *,
    device: str = "auto",
    data_root: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Run the plan: measure references, train (or resume) and evaluate each cell, then write the report."""
    if plan.problems:
        raise SrkdError(
            f"{plan.table.key} --{plan.mode} cannot start; missing or blocking: " + "; ".join(plan.problems)
        )
    bsets = resolve_sets(plan.set_specs or plan.sets, data_root)
    refs = [p for p in plan.cells if p.cell.kind != "train"]
    runs = [p for p in plan.cells if p.cell.kind == "train"]
    for p in refs:
        if p.status != "done":
            log(f"measuring {p.cell.label} ({p.model}) at {', '.join(f'x{s}' for s in p.scales)}")
            evaluate_cached(p.model, p.results_file, bsets, p.scales, device=device,  # type: ignore[arg-type]
                            data_root=data_root, progress=progress)
    for i, p in enumerate(runs, 1):
        assert p.run_dir is not None
        if p.status in ("train", "resume"):
            log(f"[{i}/{len(runs)}] training {p.cell.id} ({p.cell.label}): {p.config} {' '.join(p.overrides)}")
            trainer.train(p.cfg, resume="auto" if p.status == "resume" else None)
        if p.status != "done":
            log(f"[{i}/{len(runs)}] evaluating {p.cell.id}")
            evaluate_cached(p.run_dir / WEIGHTS, p.results_file, bsets, p.scales, device=device,  # type: ignore[arg-type]
                            data_root=data_root, progress=progress,
                            extra={"cell": p.cell.id, "config": str(p.config), "overrides": p.overrides})
        p.status = "done"
    return write_report(plan, device=device, data_root=data_root, progress=progress, log=log)


def write_report(
    plan: Plan,
    *,
    device: str = "auto",
    data_root: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """``<out>/<table>/report.{md,html}``: the paper-layout tables first, then the figures of the runs."""
    labels = [p.cell.label for p in plan.cells if p.cell.kind == "train"]
    runs: list[Run] = []
    seen: set[Path] = set()
    for p in plan.cells:
        if p.cell.kind != "train" or p.run_dir is None or p.run_dir in seen or not (p.run_dir / "config.yaml").is_file():
            continue
        seen.add(p.run_dir)
        label = p.cell.label if labels.count(p.cell.label) == 1 else f"{p.cell.label} ({p.cell.id})"
        runs.append(load_run(p.run_dir, label))
    all_scales = sorted({s for p in plan.cells for s in p.scales})
    preface = paper_sections(plan)
    if not runs:
        plan.out.mkdir(parents=True, exist_ok=True)
        md, html = plan.out / "report.md", plan.out / "report.html"
        md.write_text(markdown_page(plan.table.title, preface, plan.out / "figures"), encoding="utf-8")
        html.write_text(html_page(plan.table.title, preface), encoding="utf-8")
        return md, html
    return build_report(
        runs, plan.out, sets=plan.set_specs or plan.sets, scales=all_scales, device=device, data_root=data_root,
        figures=plan.table.figures, title=f"srkd reproduce {plan.table.key} --{plan.mode}",
        preface=lambda data: preface + ([] if "Teacher" in plan.table.references else [results_section(data, False)]),
        cache_dir=plan.root / "cache", progress=progress, log=log,
        generic_table=False,
    )
