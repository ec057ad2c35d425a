"""What ``srkd reproduce TABLE`` would do, decided before anything runs: :func:`plan`.

Every cell gets its config (loaded and validated with the cell's overrides), its run folder and a status (done,
evaluate, resume, train, measure, blocked). Missing files and blocking facts (a config that is not there, a
teacher of another scale, a run folder holding another config) are collected for the whole table, so that one
``--dry-run`` names all of them instead of a long run stopping at the first one, hours in.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from srkd.checkpoint.io import read_metadata
from srkd.config_base import load_config
from srkd.data.benchmark import with_data_keys
from srkd.distill import get_method
from srkd.engine.config import TrainConfig, resolved_config
from srkd.engine.state import list_checkpoints
from srkd.errors import SrkdError
from srkd.models import get_class
from srkd.recipes import recipes_dir
from srkd.report.build import BOOKKEEPING, flatten_config, reference_cache
from srkd.report.runs import RESULTS_FILE, WEIGHTS, Run, missing, read_results, resolve_sets
from srkd.reproduce.tables import TABLES, Cell, Mode, PaperTable, format_recipe


@dataclass
class Planned:
    cell: Cell
    scales: list[int]
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    run_dir: Path | None = None  # train cells
    model: str | None = None  # reference cells: checkpoint path or "bicubic"
    results_file: Path | None = None
    status: str = "todo"  # done | evaluate | resume | train | measure | blocked
    problems: list[str] = field(default_factory=list)
    cfg: Any = None  # the resolved TrainConfig of train cells

    def commands(self, sets: Sequence[str]) -> list[str]:
        """The ``srkd train`` / ``srkd eval`` lines a user could run by hand for this cell (shown by --dry-run)."""
        q = shlex.quote
        data = ",".join(sets)
        if self.cell.kind == "train":
            sets_ = " ".join(f"--set {q(o)}" for o in self.overrides)
            train = f"srkd train {q(str(self.config))} {sets_} --out {q(str(self.run_dir))}".replace("  ", " ")
            if self.status == "resume":
                train += " --resume auto"
            model = str(self.run_dir / "last.safetensors") if self.run_dir else "?"
            evals = [f"srkd eval --model {q(model)} --scale {s} --data {q(data)}" for s in self.scales]
            return ([] if self.status in ("done", "evaluate") else [train]) + ([] if self.status == "done" else evals)
        if self.status == "done":
            return []
        model = self.model or f"<teacher.checkpoint of {self.config}>"
        return [f"srkd eval --model {q(str(model))} --scale {s} --data {q(data)}" for s in self.scales]


@dataclass
class Plan:
    table: PaperTable
    mode: Mode
    root: Path
    sets: list[str]  # the benchmark sets' names (table rows/columns)
    cells: list[Planned]
    set_problems: list[str] = field(default_factory=list)
    set_specs: list[str] = field(default_factory=list)  # as given (names or folders)

    @property
    def problems(self) -> list[str]:
        """Each missing file or blocking fact once, with the cells it blocks."""
        cells: dict[str, list[str]] = {}
        for p in self.cells:
            for m in p.problems:
                ids = cells.setdefault(m, [])
                if p.cell.id not in ids:
                    ids.append(p.cell.id)
        return list(self.set_problems) + [f"{m} (cell{'s' if len(ids) > 1 else ''} {', '.join(ids)})"
                                          for m, ids in cells.items()]

    @property
    def out(self) -> Path:
        return self.root / self.table.key

    def describe(self) -> str:
        """The --dry-run text: every cell, its status and source, the commands it needs, then what blocks."""
        lines = [f"{self.table.key} (--{self.mode}): {self.table.title}",
                 f"runs: {self.root}   report: {self.out}   sets: {', '.join(self.sets)}", ""]
        for p in self.cells:
            sc = "/".join(f"x{s}" for s in p.scales)
            src = f"{p.config}" + (" " + " ".join(p.overrides) if p.overrides else "") if p.config else (p.model or "")
            lines.append(f"[{p.status:>8}] {p.cell.id:<28} {p.cell.label:<22} {sc:<9} {src}")
            lines += [f"           $ {c}" for c in p.commands(self.sets)]
            lines += [f"           ! {m}" for m in p.problems]
        if self.problems:
            lines += ["", f"missing or blocking ({len(self.problems)}):"] + [f"  - {m}" for m in self.problems]
        return "\n".join(lines)


def default_configs_dir() -> Path:
    """``./configs`` where ``srkd reproduce`` runs (the repository root, where it links to the shipped recipes;
    a user's own folder of that name is theirs to use), else the recipes shipped in the package."""
    local = Path("configs")
    if local.is_dir():
        return local
    return recipes_dir()


def _same_config(run_dir: Path, cfg: Any) -> bool:
    """Does the run folder hold a run of this very config (bookkeeping keys aside)?"""
    try:
        saved = resolved_config(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return False
    now = json.loads(json.dumps(cfg.model_dump(mode="json")))
    # precision is how the run executed, like the device: a run of the recipe from before it said "auto" (bf16)
    # is still that recipe's run
    skip = BOOKKEEPING | {"train.precision"}
    # a run of the recipe from when it named its data by folder (../shared/data/train/T91) is still its run
    a = {k: v for k, v in flatten_config(with_data_keys(saved)).items() if k not in skip}
    b = {k: v for k, v in flatten_config(with_data_keys(now)).items() if k not in skip}
    return a == b


def _teacher_problem(teacher: str | None, scale: int, config: Path) -> str | None:
    """Why the teacher a config names cannot serve this cell (missing file, another scale), or None."""
    if not teacher:
        return None
    if not Path(teacher).is_file():
        return f"teacher checkpoint {teacher} (named by {config})"
    try:
        meta = read_metadata(teacher)
    except SrkdError as exc:
        return str(exc)
    if scale not in meta["scales"] and not getattr(get_class(meta["arch"]), "upsample_input", False):
        served = "/".join(f"x{s}" for s in meta["scales"])
        return f"teacher checkpoint {teacher} is a {served} model, the cell needs x{scale} (named by {config})"
    return None


def _select(t: PaperTable, mode: Mode, only: Sequence[str] | None, scales: Sequence[int] | None) -> list[Cell]:
    """The cells ``--only`` (id or label globs) and ``--scales`` keep; none at all is an error, not an empty run."""
    cells = t.cells_of(mode)
    if only:
        cells = [c for c in cells if any(fnmatch.fnmatch(c.id, pat) or fnmatch.fnmatch(c.label, pat) for pat in only)]
    if scales:
        cells = [replace(c, scales=tuple(s for s in c.scales if s in scales)) for c in cells]
        cells = [c for c in cells if c.scales]
    if not cells:
        raise SrkdError(f"{t.key}: no cell matches --only/--scales (cells: {', '.join(dict.fromkeys(c.id for c in t.cells))})")
    return cells


def _set_names(specs: Sequence[str], data_root: str | None) -> tuple[list[str], list[str]]:
    """The benchmark sets' names and the problems of those that cannot be found (reported with the rest)."""
    names: list[str] = []
    problems: list[str] = []
    for spec in specs:
        try:
            names.append(resolve_sets([spec], data_root)[0].name)
        except SrkdError as exc:
            names.append(spec)
            problems.append(f"dataset {spec}: {exc}")
    return names, problems


def _measured(results_file: Path, model: str | Path, names: Sequence[str], scales: Sequence[int]) -> bool:
    return not missing(read_results(results_file, model), names, scales)


def _plan_training(p: Planned, cfg: Any, teacher_problem: str | None, names: Sequence[str], resume: bool) -> None:
    """A train cell: done, evaluate, resume or train, from what its run folder holds."""
    if get_method(cfg.method.name).Method.uses_teacher(cfg.method) and teacher_problem:
        p.problems.append(teacher_problem)
    if cfg.student.init and not Path(cfg.student.init).is_file():
        p.problems.append(f"student.init checkpoint {cfg.student.init} (named by {p.config})")
    run_dir = p.run_dir
    assert run_dir is not None and p.results_file is not None
    cfg.out_dir = str(run_dir)
    p.cfg = cfg
    if (run_dir / "config.yaml").is_file() and not _same_config(run_dir, cfg):
        p.problems.append(f"{run_dir} holds a run of another config: remove it, or choose another --out")
    weights = run_dir / WEIGHTS
    trained = Run(run_dir, {}).trained_iterations if weights.is_file() else 0
    if weights.is_file() and trained >= cfg.train.iterations:
        p.status = "done" if _measured(p.results_file, weights, names, p.scales) else "evaluate"
    elif list_checkpoints(run_dir):
        p.status = "resume"
        if not resume:
            p.problems.append(f"{run_dir} holds an unfinished run: continue it with --resume")
    else:
        p.status = "train"


def _plan_teacher(p: Planned, root: Path, teacher: str | None, teacher_problem: str | None,
                  names: Sequence[str]) -> None:
    """A reference cell measuring the teacher its config names (cached under ``<root>/cache``)."""
    if not teacher:
        p.problems.append(f"{p.config}: names no teacher.checkpoint")
    elif teacher_problem:
        p.problems.append(teacher_problem)
    else:
        p.model, p.results_file = teacher, reference_cache(root / "cache", teacher)
        p.status = "done" if _measured(p.results_file, teacher, names, p.scales) else "measure"


def _plan_cell(cell: Cell, mode: Mode, root: Path, cdir: Path, names: Sequence[str], overrides: Sequence[str],
               resume: bool) -> Planned:
    """One cell's config, run folder, status and problems (a problem makes it "blocked")."""
    p = Planned(cell, list(cell.scales))
    if cell.kind == "train":
        p.run_dir = root / cell.id
        p.results_file = p.run_dir / RESULTS_FILE
    if cell.kind == "bicubic":
        p.model, p.results_file = "bicubic", reference_cache(root / "cache", "bicubic")
        p.status = "done" if _measured(p.results_file, "bicubic", names, p.scales) else "measure"
        return p
    assert cell.recipe is not None
    stem, own = format_recipe(cell.recipe, cell.scales[0], mode)
    p.config = cdir / f"{stem}.yaml"
    p.overrides = list(own) + (list(overrides) if cell.kind == "train" else [])
    if not p.config.is_file():
        p.problems.append(f"config {p.config}")
    else:
        try:
            cfg = load_config(TrainConfig, p.config, p.overrides)
        except SrkdError as exc:
            p.problems.append(str(exc))
        else:
            teacher = cfg.teacher.checkpoint if cfg.teacher is not None else None
            teacher_problem = _teacher_problem(teacher, cfg.scale, p.config)
            if cell.kind == "teacher":
                _plan_teacher(p, root, teacher, teacher_problem, names)
            else:
                _plan_training(p, cfg, teacher_problem, names, resume)
    if p.problems:
        p.status = "blocked"
    return p


def plan(
    table: str,
    mode: Mode = "quick",
    *,
    out: str | Path | None = None,
    sets: Sequence[str] | None = None,
    scales: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    configs_dir: str | Path | None = None,
    data_root: str | None = None,
) -> Plan:
    """What ``srkd reproduce`` would do: every cell with its config, run folder, status and problems.

    Nothing is trained or measured here; configs are loaded and validated, and the files they name are checked.
    """
    if table not in TABLES:
        raise SrkdError(f"unknown table {table!r} (known: {', '.join(TABLES)})")
    t = TABLES[table]
    root = Path(out) if out is not None else Path("runs") / "reproduce" / mode
    cdir = Path(configs_dir) if configs_dir is not None else default_configs_dir()
    set_specs = list(sets or t.sets[mode])
    cells = _select(t, mode, only, scales)
    names, set_problems = _set_names(set_specs, data_root)
    planned = [_plan_cell(cell, mode, root, cdir, names, overrides, resume) for cell in cells]
    return Plan(t, mode, root, names, planned, set_problems, set_specs)
