"""The paper tables are data (``src/srkd/reproduce/papers/*.yaml``): they load, every cell names a config and a
method that exist, the published numbers are the ones the tables held as Python code before, and a malformed file
is refused with the place it is wrong instead of losing part of a table."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from srkd.config_base import load_config
from srkd.distill import METHODS
from srkd.engine.config import TrainConfig
from srkd.errors import SrkdError
from srkd.report.build import FIGURES
from srkd.reproduce import TABLES, VDSR_DF, WR_RECIPE
from srkd.reproduce.tables import format_recipe, read_paper, read_papers

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# The last commit whose src/srkd/reproduce.py defined the tables in Python, and the SHA-256 of the published
# numbers it held (canonical JSON, see _digest): a changed number must be a deliberate edit of both.
PYTHON_TABLES_COMMIT = "5463fdf86d9617aeaf639ea253a4cbb61734062f"
PUBLISHED_SHA256 = "ac0756f9b522980366753b3d3db7a8cd76f6b62625afe5e090beaafe9574d86e"
# Cells added to a table after that commit (by label): issue 37's fair data-trained reference and fidelity-mode
# cells. The tables minus these are still exactly the old ones; the published numbers are untouched.
ADDED_CELLS = {
    "dfsr-table1": {"Student (multi-scale)", "M2", "M2 (code)", "Ours (code)"},
    "dfsr-table2": {"M2 (code)", "Ours (code)"},
}


def _digest(tables: dict) -> str:
    blob = json.dumps({k: list(t.paper) for k, t in tables.items()}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def test_the_data_files_load_in_a_fixed_order_and_ship_in_the_wheel() -> None:
    assert list(TABLES) == ["dfsr-table1", "dfsr-table2", "dfsr-fig4", "dfsr-table4", "dukd-table2", "dukd-table3",
                            "dukd-table4", "dukd-fig4"]
    assert sum(len(t.cells) for t in TABLES.values()) == 121 and sum(len(t.paper) for t in TABLES.values()) == 283
    if sys.version_info >= (3, 11):
        import tomllib

        patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["srkd"]
        for name in ("dfsr.yaml", "dukd.yaml"):
            assert any(fnmatch.fnmatch(f"reproduce/papers/{name}", p) for p in patterns), name


def test_published_numbers_are_the_ones_hard_coded_before() -> None:
    assert _digest(TABLES) == PUBLISHED_SHA256
    t1 = {(e["dataset"], e["scale"], e["method"]): e for e in TABLES["dfsr-table1"].paper}
    assert t1[("Set5", 2, "Ours")] == {"dataset": "Set5", "scale": 2, "method": "Ours", "psnr": 37.20, "ssim": 0.9582}
    d3 = {(e["teacher"], e["dataset"]): (e["psnr"], e["ssim"]) for e in TABLES["dukd-table3"].paper}
    assert d3[("—", "Set5")] == (32.31, 0.8966) and d3[("SwinIR", "Urban100")] == (26.59, 0.8007)


def test_tables_equal_the_python_definitions_they_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field of every table (cells, overrides, notes, numbers) as the old module built it, read from git."""
    try:
        source = subprocess.run(["git", "show", f"{PYTHON_TABLES_COMMIT}:src/srkd/reproduce.py"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout holding the commit that defined the tables in Python")
    path = tmp_path / "old_reproduce.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_reproduce", path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "old_reproduce", old)  # dataclasses look their module up
    spec.loader.exec_module(old)
    assert list(TABLES) == list(old.TABLES)
    for key, table in TABLES.items():
        added = ADDED_CELLS.get(key, set())
        table = dataclasses.replace(table, cells=tuple(c for c in table.cells if c.label not in added))
        # repr, not ==: also the types (int scales, float numbers, tuples) and the order of keys and cells
        assert repr(dataclasses.asdict(table)) == repr(dataclasses.asdict(old.TABLES[key])), key
    assert _digest(old.TABLES) == PUBLISHED_SHA256
    assert WR_RECIPE == old.WR_RECIPE and dataclasses.astuple(VDSR_DF) == dataclasses.astuple(old.VDSR_DF)


def test_every_cell_names_a_config_and_a_known_method() -> None:
    loaded: dict[tuple, TrainConfig] = {}
    for table in TABLES.values():
        labels = {c.label for c in table.cells}
        for mode in ("quick", "full"):
            for cell in table.cells_of(mode):
                assert (cell.kind == "bicubic") == (cell.recipe is None), cell.id
                for s in cell.scales if cell.recipe is not None else ():
                    stem, overrides = format_recipe(cell.recipe, s, mode)
                    assert (CONFIGS / f"{stem}.yaml").is_file(), (table.key, mode, cell.id, stem)
                    key = (stem, overrides)
                    if key not in loaded:
                        loaded[key] = load_config(TrainConfig, CONFIGS / f"{stem}.yaml", list(overrides))
                    cfg = loaded[key]
                    assert cfg.method.name in METHODS, (table.key, cell.id, cfg.method.name)
                    if cell.kind == "teacher":
                        assert cfg.teacher is not None and cfg.teacher.checkpoint, (table.key, cell.id)
        # the published numbers and the layout refer to this table's cells and keys
        keys = {*table.rows, table.column, *(m for m, _ in table.metrics)}
        for e in table.paper:
            assert e[table.label_key] in labels and set(e) <= keys, (table.key, e)
        assert set(table.references) <= labels and set(table.figures) <= set(FIGURES), table.key
        assert set(table.sets) == {"quick", "full"}, table.key


def test_the_wr_sweep_labels_are_multiples_of_the_recipes_weight() -> None:
    """The labels and overrides of dfsr-fig4 are written out in the data; WR_RECIPE (checked against the configs
    by test_reproduce.py) is what they must multiply."""
    for mode in ("quick", "full"):
        cells = TABLES["dfsr-fig4"].cells_of(mode)
        assert [c.label for c in cells] == [f"{f * WR_RECIPE[mode]:g} (x{f:g})" for f in (0, 0.5, 1, 2, 3)]
        for c, f in zip(cells, (0, 0.5, 1, 2, 3)):
            assert c.recipe is not None
            if f not in (0, 1):  # x0 is Table 2's M4 run, x1 the recipe itself
                assert c.recipe.overrides == (f"method.w_r={f * WR_RECIPE[mode]:g}",), c.id


@pytest.mark.parametrize(("edit", "message"), [
    ("scale: [4]", "unknown keys ['scale']"),
    ("recipe: nowhere", "recipe 'nowhere' is not defined"),
    ("kind: bicubic", "a bicubic cell takes no recipe"),
])
def test_a_malformed_cell_is_refused_with_its_place(tmp_path: Path, edit: str, message: str) -> None:
    cell = {"scale: [4]": "{id: a, label: A, recipe: r, scale: [4]}",
            "recipe: nowhere": "{id: a, label: A, recipe: nowhere, scales: [4]}",
            "kind: bicubic": "{id: a, label: A, kind: bicubic, recipe: r, scales: [4]}"}[edit]
    (tmp_path / "p.yaml").write_text(
        "recipes:\n  r: {quick: a-quick, full: a}\n"
        "tables:\n  t:\n    title: T\n    rows: [dataset]\n    column: method\n"
        "    sets: {quick: [Set5], full: [Set5]}\n"
        f"    cells:\n      - {cell}\n", encoding="utf-8")
    with pytest.raises(SrkdError, match=fr"p\.yaml: t cell 0 \(a\): .*{message.replace('[', '.').replace(']', '.')}"):
        read_paper(tmp_path / "p.yaml")


def test_a_published_row_of_the_wrong_length_or_a_table_named_twice_is_refused(tmp_path: Path) -> None:
    table = ("  t:\n    title: T\n    rows: [dataset]\n    column: method\n    sets: {quick: [Set5], full: [Set5]}\n"
             "    cells: [{id: b, label: Bicubic, kind: bicubic, scales: [2]}]\n")
    (tmp_path / "a.yaml").write_text("tables:\n" + table + "    paper:\n      keys: [dataset]\n"
                                     "      columns: [Bicubic]\n      metrics: [psnr, ssim]\n"
                                     "      rows:\n        - [Set5, 33.69]\n", encoding="utf-8")
    with pytest.raises(SrkdError, match="does not hold"):
        read_paper(tmp_path / "a.yaml")
    (tmp_path / "a.yaml").write_text("tables:\n" + table, encoding="utf-8")
    (tmp_path / "b.yaml").write_text("tables:\n" + table, encoding="utf-8")
    with pytest.raises(SrkdError, match=r"b\.yaml: defined again: \['t'\]"):
        read_papers(tmp_path)
