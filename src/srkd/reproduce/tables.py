"""The papers' tables as lists of cells, read from the data files ``papers/<paper>.yaml`` of this package.

The cells and the published numbers are data: one YAML file per paper, read once at import, so that a table can be
checked against the paper (or a transcription fixed) without reading Python. This module only gives them types
(:class:`Recipe`, :class:`Cell`, :class:`PaperTable`) and refuses a file it does not understand (an unknown key, a
recipe that is not defined, a published row of the wrong length) instead of silently dropping part of a table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Literal

import yaml

from srkd.errors import SrkdError

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11

Mode = Literal["quick", "full"]
Kind = Literal["train", "teacher", "bicubic"]
MODES: tuple[Mode, ...] = ("quick", "full")
KINDS: tuple[Kind, ...] = ("train", "teacher", "bicubic")


@dataclass(frozen=True)
class Recipe:
    """Config stems (``configs/<stem>.yaml``) per mode and the overrides applied in both."""

    quick: str
    full: str
    overrides: tuple[str, ...] = ()

    def stem(self, mode: Mode) -> str:
        return self.quick if mode == "quick" else self.full


@dataclass(frozen=True)
class Cell:
    id: str  # run folder name, shared by every table that uses the same run
    label: str  # the paper's name for it (column or row label)
    kind: Kind
    recipe: Recipe | None
    scales: tuple[int, ...]
    row: tuple[tuple[str, Any], ...] = ()  # extra layout keys, e.g. (("model", "EDSR"),)
    modes: tuple[Mode, ...] = MODES


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    rows: tuple[str, ...]  # pivot row keys
    column: str  # pivot column key
    cells: tuple[Cell, ...]
    sets: dict[str, tuple[str, ...]]  # mode -> benchmark sets
    paper: tuple[dict[str, Any], ...] = ()  # the published numbers, same keys as the measured entries
    notes: tuple[str, ...] = ()
    metrics: tuple[tuple[str, str], ...] = (("psnr", "PSNR"), ("ssim", "SSIM"))
    label_key: str = "method"  # the layout key a cell's label fills
    references: tuple[str, ...] = ()  # labels shown for comparison, never bolded (teacher, data-trained)
    figures: tuple[str, ...] = ("loss", "visual", "samples", "sweep")  # report figures (srkd.report.build.FIGURES)

    def cells_of(self, mode: Mode) -> list[Cell]:
        """The cells ``--quick`` or ``--full`` runs (some exist in one mode only)."""
        return [c for c in self.cells if mode in c.modes]


# The EDSR teacher each mode's recipes distil from: --quick the 64 features / 32 blocks teachers (DUKD's ablation
# teacher, trainable on modest hardware), --full the papers' 256 / 32 (configs/teachers/edsr{64,256}-32-x*.yaml).
EDSR_TEACHER: dict[Mode, str] = {"quick": "edsr64", "full": "edsr256"}


def format_recipe(recipe: Recipe, s: int, mode: Mode) -> tuple[str, tuple[str, ...]]:
    """Config stem and overrides of a cell: ``{s}`` is its scale, ``{edsr}`` the mode's EDSR teacher name.

    The data files name teachers by placeholder so that one cell serves both modes and every scale."""
    keys = {"s": s, "edsr": EDSR_TEACHER[mode]}
    return recipe.stem(mode).format(**keys), tuple(o.format(**keys) for o in recipe.overrides)


# -- reading the data files -------------------------------------------------------------------------------------
def _check_keys(spec: Any, required: set[str], optional: set[str], where: str) -> Mapping[str, Any]:
    """A misspelt key (``scale:`` for ``scales:``) would otherwise drop part of a cell without a word."""
    if not isinstance(spec, Mapping):
        raise SrkdError(f"{where}: expected a mapping, got {spec!r}")
    missing, unknown = required - set(spec), set(spec) - required - optional
    if missing or unknown:
        raise SrkdError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    return spec


def _recipe(spec: Any, where: str) -> Recipe:
    spec = _check_keys(spec, {"quick", "full"}, {"overrides"}, where)
    return Recipe(str(spec["quick"]), str(spec["full"]), tuple(str(o) for o in spec.get("overrides", ())))


def _cell(spec: Any, recipes: Mapping[str, Recipe], where: str) -> Cell:
    """One cell: a named recipe (or its own quick/full stems) whose overrides come before the cell's."""
    where = f"{where} ({spec.get('id')})" if isinstance(spec, Mapping) else where
    spec = _check_keys(spec, {"id", "label", "scales"},
                       {"kind", "recipe", "quick", "full", "overrides", "row", "modes"}, where)
    kind = spec.get("kind", "train")
    modes = tuple(spec.get("modes", MODES))
    if kind not in KINDS or not set(modes) <= set(MODES):
        raise SrkdError(f"{where}: kind must be one of {KINDS}, modes a subset of {MODES}")
    extra = tuple(str(o) for o in spec.get("overrides", ()))
    recipe: Recipe | None = None
    if "recipe" in spec:
        if spec["recipe"] not in recipes or "quick" in spec or "full" in spec:
            raise SrkdError(f"{where}: recipe {spec['recipe']!r} is not defined, or given with quick/full")
        base = recipes[spec["recipe"]]
        recipe = Recipe(base.quick, base.full, base.overrides + extra)
    elif "quick" in spec or "full" in spec:
        recipe = _recipe({k: spec[k] for k in ("quick", "full", "overrides") if k in spec}, where)
    if (recipe is None) != (kind == "bicubic"):
        raise SrkdError(f"{where}: a {kind} cell {'takes no' if kind == 'bicubic' else 'needs a'} recipe")
    row = tuple((str(k), v) for k, v in (spec.get("row") or {}).items())
    return Cell(str(spec["id"]), str(spec["label"]), kind, recipe, tuple(int(s) for s in spec["scales"]), row,
                modes)


def _published(spec: Any, column: str, where: str) -> tuple[dict[str, Any], ...]:
    """The paper's numbers in the long format of measured entries: each row holds the ``keys``' values, then for
    each of ``columns`` (values of the table's column key) its ``metrics``, as printed in the paper."""
    spec = _check_keys(spec, {"keys", "columns", "metrics", "rows"}, set(), where)
    keys, columns, metrics = list(spec["keys"]), list(spec["columns"]), list(spec["metrics"])
    out = []
    for row in spec["rows"]:
        if len(row) != len(keys) + len(columns) * len(metrics):
            raise SrkdError(f"{where}: row {row} does not hold {keys} then {metrics} for each of {columns}")
        base = dict(zip(keys, row[: len(keys)]))
        values = [float(v) for v in row[len(keys):]]
        for i, col in enumerate(columns):
            out.append({**base, column: col, **dict(zip(metrics, values[len(metrics) * i:len(metrics) * (i + 1)]))})
    return tuple(out)


_TABLE_KEYS = {"label_key", "metrics", "references", "figures", "notes", "paper"}


def _table(key: str, spec: Any, recipes: Mapping[str, Recipe], where: str) -> PaperTable:
    spec = _check_keys(spec, {"title", "rows", "column", "sets", "cells"}, _TABLE_KEYS, f"{where}: {key}")
    cells = tuple(_cell(c, recipes, f"{where}: {key} cell {i}") for i, c in enumerate(spec["cells"]))
    given = {k: spec[k] for k in ("label_key",) if k in spec}
    given |= {k: tuple(str(v) for v in spec[k]) for k in ("references", "figures", "notes") if k in spec}
    if "metrics" in spec:
        given["metrics"] = tuple((str(k), str(name)) for k, name in spec["metrics"])
    if "paper" in spec:
        given["paper"] = _published(spec["paper"], str(spec["column"]), f"{where}: {key} paper")
    return PaperTable(key, str(spec["title"]), tuple(spec["rows"]), str(spec["column"]), cells,
                      {str(m): tuple(s) for m, s in spec["sets"].items()}, **given)


@dataclass
class Papers:
    """What the data files define: the tables, the named recipes and the ``constants`` (values tests check)."""

    tables: dict[str, PaperTable] = field(default_factory=dict)
    recipes: dict[str, Recipe] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)

    def add(self, other: Papers, where: str) -> None:
        """Names are global (a cell id or recipe means one thing everywhere): a second definition is refused."""
        again = (set(self.tables) & set(other.tables)) | (set(self.recipes) & set(other.recipes)) | (
            set(self.constants) & set(other.constants))
        if again:
            raise SrkdError(f"{where}: defined again: {sorted(again)}")
        self.tables.update(other.tables)
        self.recipes.update(other.recipes)
        self.constants.update(other.constants)


def read_paper(source: Traversable) -> Papers:
    """The tables of one paper's file, in the file's order."""
    doc = _check_keys(yaml.safe_load(source.read_text(encoding="utf-8")), {"tables"}, {"recipes", "constants"},
                      source.name)
    recipes = {name: _recipe(r, f"{source.name}: recipe {name}") for name, r in (doc.get("recipes") or {}).items()}
    tables = {key: _table(key, spec, recipes, source.name) for key, spec in doc["tables"].items()}
    return Papers(tables, recipes, dict(doc.get("constants") or {}))


def read_papers(folder: Traversable | None = None) -> Papers:
    """Every paper's file, in name order, so that ``srkd reproduce`` lists the tables the same way each time."""
    folder = folder if folder is not None else files("srkd.reproduce") / "papers"
    papers = Papers()
    for source in sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
        papers.add(read_paper(source), source.name)
    return papers


PAPERS = read_papers()
TABLES: dict[str, PaperTable] = PAPERS.tables
# the DFSR VDSR recipe, and its configs' method.w_r that the dfsr-fig4 sweep labels multiply (tests compare both
# with configs/)
VDSR_DF: Recipe = PAPERS.recipes["datafree-vdsr"]
WR_RECIPE: dict[str, float] = {m: float(w) for m, w in PAPERS.constants["w_r"].items()}
