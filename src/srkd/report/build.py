"""``srkd report``: run directories -> ``report.md`` + ``report.html`` with the papers' tables and figures.

Every figure is drawn only from runs that can support it, and says so otherwise:

==========================  =====================================================================================
results table               every run with weights (``last.safetensors``), the teachers they name, bicubic
loss curves                 every run with a ``log.jsonl``
visual comparison           per scale, one benchmark image (the one the best run improves most over bicubic),
                            cropped where bicubic is worst (DFSR Fig. 2/5, DUKD Fig. 6)
synthetic samples           data-free runs that saved ``samples/*.png`` (DFSR Fig. 3)
w_R sweep                   >= 2 data-free runs whose configs differ only in ``method.w_r`` (DFSR Fig. 4)
student-teacher agreement   runs with a teacher checkpoint and a training set (DUKD Fig. 5)
PSNR gain vs parameters     >= 2 student sizes at one scale, each with a scratch run and a distilled run
                            (DUKD Fig. 4)
==========================  =====================================================================================

Benchmark numbers are cached (``results.json`` in each run; teachers and bicubic under ``<out>/cache``), so a
report is cheap to redo and ``srkd reproduce`` shares the same cache.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from srkd.checkpoint.io import load_model
from srkd.data import registry
from srkd.data.benchmark import BenchmarkSet, with_data_keys
from srkd.data.degrade import load_pairs, make_lr
from srkd.data.images import quantize, read_image, to_float
from srkd.device import resolve_device
from srkd.distill.csd import CSDConfig
from srkd.engine.logging import read_log
from srkd.errors import DataError, SrkdError
from srkd.evaluation.upscale import Bicubic, inference_mode, super_resolve
from srkd.metrics import psnr_y
from srkd.models.profile import count_params
from srkd.report import figures
from srkd.report.html import Figure, Section, Table, html_page, markdown_page
from srkd.report.runs import (
    RESULTS_FILE,
    Results,
    Run,
    assign_labels,
    default_label,
    evaluate_cached,
    load_for_scale,
    load_run,
    resolve_sets,
)
from srkd.report.tables import pivot_table, results_table

DEFAULT_SETS = ("Set5", "Set14", "B100")
FIGURES = ("loss", "visual", "samples", "sweep", "agreement", "gain")
MAX_VISUAL_RUNS = 8
AGREEMENT_TRAIN_PATCHES = 16
AGREEMENT_TEST_IMAGES = 10
AGREEMENT_LR_PATCH = 48
# Config keys that do not change what a run learns (where it runs, how it logs): ignored when comparing configs.
BOOKKEEPING = {
    "name", "out_dir", "data.val", "data.data_root", "train.device", "train.tensorboard", "train.log_every",
    "train.ckpt_every", "train.keep_ckpt", "train.val_every", "train.compile", "method.sample_every",
}


def reference_cache(cache_dir: Path, model: str | Path) -> Path:
    """Where the results of a teacher checkpoint (or bicubic) are cached, shared by report and reproduce."""
    if str(model).lower() == "bicubic":
        return cache_dir / "bicubic.json"
    digest = hashlib.sha256(str(Path(model).resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"teacher-{Path(model).stem}-{digest}.json"


def scale_text(s: Any) -> str:
    return f"×{s}"


@dataclass
class Reference:
    """A model measured beside the runs: a teacher checkpoint or bicubic."""

    label: str
    model: str | Path
    scales: list[int]
    results: Results = field(default_factory=dict)


@dataclass
class ReportData:
    """Everything the sections are drawn from (also what ``srkd reproduce`` adds its paper tables to)."""

    runs: list[Run]
    sets: list[Any]
    results: dict[Path, Results]  # run path -> results
    references: list[Reference]
    notes: list[str] = field(default_factory=list)

    def set_names(self) -> list[str]:
        return [b.name for b in self.sets]

    def entries(self) -> list[dict[str, Any]]:
        """Long-format rows {dataset, scale, method, psnr, ssim} of every measured model."""
        out = []
        for label, res in [(r.label, r.results) for r in self.references] + [
            (run.label, self.results.get(run.path, {})) for run in self.runs
        ]:
            for s, per_set in res.items():
                for name, r in per_set.items():
                    out.append({"dataset": name, "scale": s, "method": label, "psnr": r["psnr_y"], "ssim": r["ssim_y"]})
        return out


# -- gathering -------------------------------------------------------------------------------------------
def _csd_contrasts(method_config: dict) -> bool:
    """Does this CSD run use its VGG19 contrastive term (a ``contrast_weight`` of 0 is the ablation without it)?"""
    return float(method_config.get("contrast_weight", CSDConfig.model_fields["contrast_weight"].default)) > 0


def collect(
    runs: Sequence[Run],
    sets: Sequence[Any],
    *,
    scales: Sequence[int] | None,
    cache_dir: Path,
    device: str,
    data_root: str | None,
    teacher: bool,
    progress: bool,
    log: Callable[[str], None] = print,
) -> ReportData:
    data = ReportData(list(runs), list(sets), {}, [])
    wanted = set(scales) if scales else None
    all_scales: set[int] = set()
    for run in runs:
        run_scales = [s for s in run.eval_scales if wanted is None or s in wanted]
        if run.weights is None:
            data.notes.append(f"Missing: {run.path} has no weights yet ({run.path / 'last.safetensors'}).")
            continue
        if not run_scales:
            continue
        if not run.finished:
            data.notes.append(
                f"Note: {run.label} is unfinished ({run.trained_iterations}/{run.iterations} iterations); "
                "its current weights are shown."
            )
        if run.method == "csd" and not run.method_config.get("vgg_weights") and _csd_contrasts(run.method_config):
            data.notes.append(
                f"Note: {run.label} ({run.path}) ran CSD with random VGG19 features (no method.vgg_weights): its "
                "contrastive term is not the paper's."
            )
        log(f"evaluating {run.label} ({run.path}) at {', '.join(map(scale_text, run_scales))}")
        data.results[run.path] = evaluate_cached(
            run.weights, run.path / RESULTS_FILE, sets, run_scales, device=device, data_root=data_root,
            progress=progress, extra={"run": run.name, "label": run.label, "iteration": run.trained_iterations},
        )
        all_scales.update(run_scales)
    if teacher:
        per_scale: dict[int, list[Path]] = {}
        for run in runs:
            t = run.teacher_checkpoint
            if t is None or run.path not in data.results:
                continue
            if not t.is_file():
                data.notes.append(f"Missing: teacher checkpoint {t} (named by {run.path / 'config.yaml'}).")
                continue
            for s in data.results[run.path]:
                if t not in per_scale.setdefault(s, []):
                    per_scale[s].append(t)
        teachers: dict[Path, list[int]] = {}
        for s, ts in sorted(per_scale.items()):
            for t in ts:
                teachers.setdefault(t, []).append(s)
        clash = any(len(ts) > 1 for ts in per_scale.values())
        for t, t_scales in teachers.items():
            label = f"Teacher ({t.stem})" if clash else "Teacher"
            log(f"evaluating teacher {t} at {', '.join(map(scale_text, t_scales))}")
            res = evaluate_cached(t, reference_cache(cache_dir, t), sets, t_scales, device=device,
                                  data_root=data_root, progress=progress)
            data.references.append(Reference(label, t, t_scales, res))
    if all_scales:
        bic_scales = sorted(all_scales)
        log("evaluating bicubic")
        res = evaluate_cached("bicubic", reference_cache(cache_dir, "bicubic"), sets, bic_scales, device="cpu",
                              data_root=data_root, progress=progress)
        data.references.append(Reference("Bicubic", "bicubic", bic_scales, res))
    return data


# -- sections --------------------------------------------------------------------------------------------
def _params(path: Path | None, memo: dict[Path, int]) -> int | None:
    if path is None or not path.is_file():
        return None
    if path not in memo:
        try:
            memo[path] = count_params(load_model(path)[0])
        except SrkdError:
            return None
    return memo[path]


def _student_text(run: Run) -> str:
    arch, kwargs = run.student
    keys = ("n_feats", "n_resblocks", "n_resgroups", "n_layers", "embed_dim", "depths")
    short = ", ".join(f"{k}={kwargs[k]}" for k in keys if k in kwargs)
    return f"{arch} ({short})" if short else arch


def runs_section(data: ReportData, params: dict[Path, int]) -> Section:
    rows = []
    for run in data.runs:
        speeds = []
        precision = (run.config.get("train") or {}).get("precision")
        if run.log_path is not None:
            try:  # a damaged log costs the speed column, not the report
                records = read_log(run.log_path)
            except DataError:
                records = []
            speeds = [
                float(r["it_s"]) for r in records
                if r.get("type") == "train" and isinstance(r.get("it_s"), (int, float))
            ]
            # what the run executed in ("auto" resolves per machine), from its last start record
            precision = next((r["precision"] for r in reversed(records)
                              if r.get("type") == "start" and r.get("precision")), precision)
        p = _params(run.weights, params)
        rows.append({
            "label": run.label,
            "run": str(run.path),
            "method": run.method,
            "student": _student_text(run),
            "params (M)": f"{p / 1e6:.3f}" if p is not None else None,
            "scale": "/".join(scale_text(s) for s in run.eval_scales),
            "iterations": f"{run.trained_iterations}/{run.iterations}",
            "precision": precision,
            "it/s": f"{statistics.median(speeds):.2f}" if speeds else None,
        })
    return Section("Runs", [results_table(rows)])


def results_section(data: ReportData, with_runs: bool = True) -> Section:
    """Dataset x scale rows, one column per model. ``with_runs=False`` keeps the teachers and bicubic only:
    ``srkd reproduce`` shows them beside a paper table whose layout has no row for them, because a student's
    number means little without its teacher's (a teacher below its scratch student explains a table)."""
    methods = [r.label for r in data.references if r.label.startswith("Teacher")] + ["Bicubic"]
    if with_runs:
        methods += [run.label for run in data.runs]
    entries = [e for e in data.entries() if e["method"] in methods]
    title = "Results (PSNR / SSIM)" if with_runs else "Teachers and bicubic, measured alongside"
    if not entries:
        return Section(title, ["Not shown: no run has weights to evaluate."])
    md, html = pivot_table(
        entries, ["dataset", "scale"], "method", column_order=methods,
        row_order={"dataset": data.set_names()}, fmt_row={"scale": scale_text},
        no_best=[m for m in methods if m.startswith("Teacher")] if with_runs else methods,
    )
    caption = "PSNR (dB) / SSIM on the Y channel (BT.601), border of `scale` pixels cropped; the papers' protocol."
    if with_runs:
        caption += (" Runs are measured with their last weights (last.safetensors: EMA weights when EMA was on). "
                    "Best value of each row in bold, the teacher aside.")
    return Section(title, [Table(md, html, caption)])


def loss_section(data: ReportData) -> Section:
    logged = [r for r in data.runs if r.log_path is not None]
    if not logged:
        return Section("Loss curves", ["Not shown: no run has a log.jsonl."])
    try:
        png = figures.loss_curves([r.log_path for r in logged], [r.label for r in logged])  # type: ignore[misc]
    except (ValueError, DataError) as exc:
        return Section("Loss curves", [f"Not shown: {exc}."])
    return Section("Loss curves", [Figure(png, "Training loss terms (log scale where positive) and validation "
                                               "PSNR, from each run's log.jsonl.", "loss-curves")])


def _load(path: Path, scale: int, memo: dict[tuple[Path, int], torch.nn.Module]) -> torch.nn.Module:
    if (path, scale) not in memo:
        memo[(path, scale)] = load_for_scale(path, scale)
    return memo[(path, scale)]


def sr_image(model: torch.nn.Module | str, lr: torch.Tensor, scale: int, device: str) -> torch.Tensor:
    """uint8 (3, sH, sW) SR of one uint8 LR image, as ``srkd upscale`` would save it."""
    net = Bicubic(scale) if model == "bicubic" else model
    dev = resolve_device(device)
    with inference_mode(net, dev):  # type: ignore[arg-type]
        res = super_resolve(net, to_float(lr)[None].to(dev), scale=scale)  # type: ignore[arg-type]
    return quantize(res.rgb.cpu())[0]


def _one_image(bset: Any, name: str, scale: int, data_root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    path = next((p for p in bset.hr_paths if p.stem == name), None)
    if path is None:
        raise SrkdError(f"{bset.name}: no image named {name!r} any more")
    one = BenchmarkSet(bset.name, [path], bset.lr_dir)
    (_n, hr, lr), = load_pairs(one, scale, registry.data_root(data_root) / "cache" / "lr")
    return hr, lr


def visual_section(data: ReportData, device: str, data_root: str | None, models: dict) -> Section:
    blocks: list[Any] = []
    bicubic = next((r for r in data.references if r.model == "bicubic"), None)
    scales = sorted({s for res in data.results.values() for s in res})
    if bicubic is None or not scales:
        return Section("Visual comparison", ["Not shown: no evaluated run."])
    bset = data.sets[-1]  # the last set asked for: Urban100/B100 hold the texture the papers show
    for scale in scales[-3:]:
        at_scale = [run for run in data.runs if bset.name in data.results.get(run.path, {}).get(scale, {})]
        if not at_scale:
            continue
        shown = at_scale[:MAX_VISUAL_RUNS]
        if len(at_scale) > len(shown):
            blocks.append(f"Note: {len(at_scale) - len(shown)} more runs at ×{scale} are not drawn.")
        best = max(shown, key=lambda r: data.results[r.path][scale][bset.name]["psnr_y"])
        mine = {im["name"]: im["psnr_y"] for im in data.results[best.path][scale][bset.name]["images"]}
        base = {im["name"]: im["psnr_y"] for im in bicubic.results[scale][bset.name]["images"]}
        name = max(mine, key=lambda k: mine[k] - base.get(k, mine[k]))
        hr, lr = _one_image(bset, name, scale, data_root)
        images = {"Bicubic": sr_image("bicubic", lr, scale, device)}
        for ref in data.references:
            if ref.model != "bicubic" and scale in ref.scales:
                images[ref.label] = sr_image(_load(Path(ref.model), scale, models), lr, scale, device)
        for run in shown:
            images[run.label] = sr_image(_load(run.weights, scale, models), lr, scale, device)  # type: ignore[arg-type]
        png = figures.visual_comparison(images, hr, title=f"{bset.name} {name} ×{scale}")
        blocks.append(Figure(
            png,
            f"×{scale} results on {bset.name}/{name} (the image where {best.label} gains most over bicubic); crop "
            "where bicubic is worst, PSNR (Y) of the crop under each.",
            f"visual-x{scale}",
        ))
    return Section("Visual comparison", blocks or ["Not shown: no run was evaluated on " + bset.name + "."])


def samples_section(data: ReportData) -> Section:
    free = [r for r in data.runs if r.method == "datafree" and (r.method_config.get("inputs") != "noise")]
    blocks: list[Any] = []
    for run in free:
        grids = run.samples
        if not grids:
            continue
        picks = [grids[-1]] if len(grids) == 1 else [grids[0], grids[-1]]
        for p in picks:
            blocks.append(Figure(p.read_bytes(), f"{run.label}: synthetic LR samples and the teacher's SR ({p.name})",
                                 f"samples-{run.path.name}-{p.stem}"))
    if not blocks:
        why = "no data-free run" if not free else "no data-free run saved samples (method.sample_every > 0 does)"
        return Section("Synthetic samples (DFSR Fig. 3)", [f"Not shown: {why}."])
    return Section("Synthetic samples (DFSR Fig. 3)", blocks)


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys ({"optim.lr": "0.0001", ...}), each leaf as its JSON text."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten_config(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(d, sort_keys=True)}


def config_signature(run: Run, ignore: set[str]) -> str:
    flat = flatten_config(with_data_keys(run.config))  # T91 and ../shared/data/train/T91 are one data set
    return json.dumps({k: v for k, v in flat.items() if k not in BOOKKEEPING | ignore}, sort_keys=True)


def sweep_section(data: ReportData) -> Section:
    title = "Reconstruction weight w_R (DFSR Fig. 4)"
    groups: dict[str, list[Run]] = {}
    for run in data.runs:
        if run.method == "datafree" and run.path in data.results:
            groups.setdefault(config_signature(run, {"method.w_r"}), []).append(run)
    best = max(groups.values(), key=lambda g: len({r.method_config.get("w_r", 1.0) for r in g}), default=[])
    if len({r.method_config.get("w_r", 1.0) for r in best}) < 2:
        return Section(title, ["Not shown: needs at least 2 evaluated data-free runs whose configs differ only "
                               "in method.w_r."])
    scale = min(s for r in best for s in data.results[r.path])
    series = {}
    for name in data.set_names():
        pts = [(float(r.method_config.get("w_r", 1.0)), data.results[r.path][scale][name]["psnr_y"])
               for r in best if name in data.results[r.path].get(scale, {})]
        if pts:
            series[name] = pts
    png = figures.line_plot(series, xlabel="w_R", ylabel=f"PSNR (dB) ×{scale}", title=f"influence of w_R at ×{scale}")
    return Section(title, [Figure(png, f"PSNR vs reconstruction weight w_R at ×{scale} ({len(best)} runs).", "wr-sweep")])


def _training_patches(specs: Sequence[str], scale: int, data_root: str | None) -> list[torch.Tensor]:
    """Deterministic uint8 LR patches: centre crops (LR 48x48, smaller for small images) of evenly spaced training
    images, degraded as in training."""
    paths = [p for b in resolve_sets(specs, data_root) for p in b.hr_paths]
    step = max(1, len(paths) // (2 * AGREEMENT_TRAIN_PATCHES))
    lrs = []
    for p in paths[::step]:
        img = read_image(p)
        _, h, w = img.shape
        size = min(AGREEMENT_LR_PATCH, h // scale, w // scale) * scale
        if size < 8 * scale:
            continue
        top, left = (h - size) // 2, (w - size) // 2
        lrs.append(make_lr(img[:, top : top + size, left : left + size].contiguous(), scale)[1])
        if len(lrs) == AGREEMENT_TRAIN_PATCHES:
            break
    if not lrs:
        raise SrkdError(f"no training image of at least {8 * scale}x{8 * scale} pixels in {', '.join(specs)}")
    return lrs


def _agreement(student: Any, teacher: Any, lrs: Sequence[torch.Tensor], scale: int, device: str,
               teacher_out: dict[int, torch.Tensor]) -> float:
    vals = []
    for i, lr in enumerate(lrs):
        if i not in teacher_out:
            teacher_out[i] = sr_image(teacher, lr, scale, device)
        vals.append(float(psnr_y(sr_image(student, lr, scale, device), teacher_out[i], crop_border=scale)))
    return sum(vals) / len(vals)


def agreement_section(data: ReportData, device: str, data_root: str | None, models: dict) -> Section:
    title = "Student–teacher agreement, train vs test (DUKD Fig. 5)"
    train_specs = next(((r.config.get("data") or {}).get("train") for r in data.runs
                        if (r.config.get("data") or {}).get("train")), None)
    if not train_specs:
        return Section(title, ["Not shown: no run names a training set (data.train)."])
    teachers_at: dict[int, set[Path]] = {}
    for r in data.runs:
        if r.teacher_checkpoint is not None and r.teacher_checkpoint.is_file():
            teachers_at.setdefault(r.scale, set()).add(r.teacher_checkpoint)
    bset = data.sets[0]
    groups, train_vals, test_vals = [], [], []
    n_train = 0
    for scale in sorted(teachers_at):
        cands = [r for r in data.runs if r.weights is not None and r.scale == scale]
        if not cands:
            continue
        lr_train = _training_patches(train_specs, scale, data_root)
        n_train = len(lr_train)
        sub = BenchmarkSet(bset.name, bset.hr_paths[:AGREEMENT_TEST_IMAGES], bset.lr_dir)
        lr_test = [lr for _n, _hr, lr in load_pairs(sub, scale, registry.data_root(data_root) / "cache" / "lr")]
        outs: dict[tuple[Path, str], dict[int, torch.Tensor]] = {}
        for r in cands:
            t = r.teacher_checkpoint if r.teacher_checkpoint in teachers_at[scale] else None
            if t is None and len(teachers_at[scale]) == 1:  # scratch runs: the teacher of their siblings
                t = next(iter(teachers_at[scale]))
            if t is None:
                continue
            teacher = _load(t, scale, models)
            student = _load(r.weights, scale, models)  # type: ignore[arg-type]
            tr = _agreement(student, teacher, lr_train, scale, device, outs.setdefault((t, "train"), {}))
            te = _agreement(student, teacher, lr_test, scale, device, outs.setdefault((t, "test"), {}))
            groups.append(r.label if len(teachers_at) == 1 else f"{r.label} ×{scale}")
            train_vals.append(tr)
            test_vals.append(te)
    if not groups:
        return Section(title, ["Not shown: no evaluated run has a teacher checkpoint at its scale."])
    png = figures.bar_pairs(groups, {"training patches": train_vals, f"{bset.name} (test)": test_vals},
                            ylabel="PSNR(student, teacher) dB", title="agreement with the teacher")
    rows = [{"run": g, "train PSNR(S,T)": a, f"{bset.name} PSNR(S,T)": b} for g, a, b in zip(groups, train_vals, test_vals)]
    return Section(title, [
        Figure(png, f"PSNR between student and teacher outputs (Y, border = scale) on {n_train} "
                    f"training patches ({', '.join(train_specs)}) and on {bset.name} "
                    f"({min(AGREEMENT_TEST_IMAGES, len(bset.hr_paths))} images). Higher = the student mimics the teacher more closely.",
               "agreement"),
        results_table(rows),
    ])


def gain_section(data: ReportData, params: dict[Path, int]) -> Section:
    title = "PSNR gain vs parameters (DUKD Fig. 4)"
    blocks: list[Any] = []
    scales = sorted({r.scale for r in data.runs if r.path in data.results})
    for scale in scales:
        by_student: dict[str, list[Run]] = {}
        for r in data.runs:
            if r.path in data.results and r.scale == scale:
                by_student.setdefault(json.dumps(r.student, sort_keys=True), []).append(r)
        for set_name in data.set_names()[:2]:
            series: dict[str, list[tuple[float, float]]] = {}
            notes: dict[str, list[str]] = {}
            for group in by_student.values():
                base = next((r for r in group if r.method == "scratch"), None)
                p = _params(group[0].weights, params)
                if base is None or p is None or set_name not in data.results[base.path].get(scale, {}):
                    continue
                ref = data.results[base.path][scale][set_name]["psnr_y"]
                for r in group:
                    if r is base or set_name not in data.results[r.path].get(scale, {}):
                        continue
                    gain = data.results[r.path][scale][set_name]["psnr_y"] - ref
                    key = default_label(r)  # one line per method across the student sizes
                    series.setdefault(key, []).append((p / 1e6, gain))
                    tp = _params(r.teacher_checkpoint, params)
                    notes.setdefault(key, []).append(f"{(1 - p / tp) * 100:.0f}%" if tp else "")
            series = {k: v for k, v in series.items() if len({x for x, _ in v}) >= 2}  # several student sizes
            if series:
                png = figures.line_plot(series, xlabel="student parameters (M)", ylabel="PSNR gain over scratch (dB)",
                                        title=f"{set_name} ×{scale}", annotations={k: notes[k] for k in series}, hline=0.0)
                blocks.append(Figure(png, f"Gain of each method over the scratch student of the same size, {set_name} "
                                          f"×{scale}; labels: parameter reduction vs the teacher.",
                                     f"gain-{set_name}-x{scale}"))
    if not blocks:
        return Section(title, ["Not shown: needs runs of at least 2 student sizes at one scale, each size with a "
                               "scratch run and a distilled run."])
    return Section(title, blocks)


# -- the whole report ------------------------------------------------------------------------------------
def build_report(
    run_dirs: Sequence[str | Path | Run],
    out: str | Path,
    *,
    sets: Sequence[str] | None = None,
    scales: Sequence[int] | None = None,
    device: str = "cpu",
    data_root: str | None = None,
    teacher: bool = True,
    figures: Collection[str] = FIGURES,
    title: str = "srkd report",
    preface: Callable[[ReportData], list[Section]] | None = None,
    generic_table: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Write ``out/report.md`` (+ ``out/figures/*.png``), the self-contained ``out/report.html`` and
    ``out/report.json`` (every measured number in long format, for scripts and for committing results).

    ``run_dirs``: run folders (or :class:`Run` objects carrying a label). ``sets``: benchmark names or HR
    folders (default Set5, Set14, B100). ``figures``: which of :data:`FIGURES` to draw. ``preface(data)``: extra sections placed first (``srkd reproduce``
    adds the paper's table there; ``generic_table=False`` then drops the dataset x scale x run table).
    Returns the two paths.
    """
    if not run_dirs:
        raise SrkdError("give at least one run folder")
    runs = [r if isinstance(r, Run) else load_run(r) for r in run_dirs]
    assign_labels(runs)
    bsets = resolve_sets(list(sets or DEFAULT_SETS), data_root)
    out = Path(out)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    data = collect(runs, bsets, scales=scales, cache_dir=cache, device=device, data_root=data_root,
                   teacher=teacher, progress=progress, log=log)
    params: dict[Path, int] = {}
    models: dict[tuple[Path, int], torch.nn.Module] = {}
    sections = list(preface(data)) if preface else []
    if generic_table:
        sections.append(results_section(data))
    sections.append(runs_section(data, params))
    unknown = set(figures) - set(FIGURES)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)} (known: {', '.join(FIGURES)})")
    if "loss" in figures:
        sections.append(loss_section(data))
    if "visual" in figures:
        log("drawing the visual comparison")
        try:
            sections.append(visual_section(data, device, data_root, models))
        except SrkdError as exc:
            sections.append(Section("Visual comparison", [f"Not shown: {exc}."]))
    if "samples" in figures:
        sections.append(samples_section(data))
    if "sweep" in figures:
        sections.append(sweep_section(data))
    if "agreement" in figures:
        log("measuring student-teacher agreement")
        try:
            sections.append(agreement_section(data, device, data_root, models))
        except SrkdError as exc:
            sections.append(Section("Student–teacher agreement, train vs test (DUKD Fig. 5)", [f"Not shown: {exc}."]))
    if "gain" in figures:
        sections.append(gain_section(data, params))
    if data.notes:
        sections.append(Section("Notes", list(dict.fromkeys(data.notes))))
    try:
        out.mkdir(parents=True, exist_ok=True)
        md_path, html_path = out / "report.md", out / "report.html"
        md_path.write_text(markdown_page(title, sections, out / "figures"), encoding="utf-8")
        html_path.write_text(html_page(title, sections), encoding="utf-8")
        runs_json = {run.label: {"path": str(run.path), "config": run.name} for run in data.runs}
        (out / "report.json").write_text(json.dumps({"title": title, "runs": runs_json, "entries": data.entries()},
                                                    indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SrkdError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    return md_path, html_path


__all__ = ["DEFAULT_SETS", "FIGURES", "Reference", "ReportData", "build_report", "collect", "reference_cache", "sr_image"]
