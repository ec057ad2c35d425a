"""`srkd reproduce`: the tables' cells, the plan (--dry-run), one clear error for what is missing, and one tiny
table run end to end (train, evaluate, skip when finished, resume when interrupted, report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.data.images import write_image
from srkd.engine import state as ckpt
from srkd.models import build_model
from srkd.report.runs import RESULTS_FILE, read_results
from srkd.reproduce import TABLES, execute, plan
from srkd.reproduce.tables import format_recipe as _fmt

EXPECTED = {"dfsr-table1", "dfsr-table2", "dfsr-fig4", "dfsr-table4", "dukd-table2", "dukd-table3", "dukd-table4",
            "dukd-fig4"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench") / "Tiny"
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        write_image(folder / f"im{i}.png", torch.randint(0, 256, (3, 48, 40), generator=g, dtype=torch.uint8))
    return folder


@pytest.fixture
def configs(tmp_path: Path, bench: Path) -> Path:
    """configs/edsr-x4-dukd-quick.yaml: a tiny EDSR x4 DUKD run with a tiny teacher (absolute paths)."""
    torch.manual_seed(0)
    teacher = tmp_path / "teacher-x4.safetensors"
    save_model(teacher, build_model("edsr", scale=4, n_feats=8, n_resblocks=1))
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "edsr-x4-dukd-quick.yaml").write_text(yaml.safe_dump({
        "name": "tiny-dukd", "scale": 4,
        "student": {"arch": "edsr", "kwargs": {"n_feats": 4, "n_resblocks": 1}},
        "teacher": {"checkpoint": str(teacher)},
        "method": {"name": "dukd"},
        "data": {"train": [str(bench)], "lr_patch": 8, "batch_size": 2},
        "train": {"iterations": 4, "val_every": 0, "log_every": 1, "ckpt_every": 2, "tensorboard": False},
    }))
    return folder


# -- the tables ------------------------------------------------------------------------------------------
def test_tables_and_published_numbers() -> None:
    assert set(TABLES) == EXPECTED
    t1 = {(e["dataset"], e["scale"], e["method"]): e for e in TABLES["dfsr-table1"].paper}
    assert len(t1) == 4 * 3 * 5
    assert t1[("Set5", 2, "Ours")]["psnr"] == 37.20 and t1[("Set5", 2, "Ours")]["ssim"] == 0.9582
    assert t1[("Urban100", 4, "Teacher")]["psnr"] == 25.20 and t1[("B100", 3, "Noise")]["ssim"] == 0.7417
    t4 = {(e["dataset"], e["scale"], e["method"]): e for e in TABLES["dfsr-table4"].paper}
    assert t4[("Set14", 3, "Student")]["psnr"] == 30.45 and t4[("Urban100", 2, "Ours")]["psnr"] == 30.58
    d2 = {(e["scale"], e["model"], e["method"], e["dataset"]): e for e in TABLES["dukd-table2"].paper}
    assert len(d2) == 36 * 4
    assert d2[(4, "RCAN", "DUKD", "Urban100")]["psnr"] == 26.62 and d2[(2, "EDSR", "CSD", "Set5")]["ssim"] == 0.9607
    d3 = {(e["teacher"], e["dataset"]): e["psnr"] for e in TABLES["dukd-table3"].paper}
    assert d3[("SwinIR", "Set14")] == 28.82 and d3[("—", "Urban100")] == 26.37
    abl = {e["method"]: (e["AD"], e["RS"], e["PD"], e["psnr"]) for e in TABLES["dfsr-table2"].paper}
    assert abl["M2"] == (False, True, False, 37.05) and abl["M4"] == (True, False, True, 36.12)
    # every published cell has a cell to measure it (DUKD Table 2 in --full)
    full = {(c.label, dict(c.row).get("model"), s) for c in TABLES["dukd-table2"].cells for s in c.scales}
    assert {(m, mo, s) for s, mo, m, _d in d2} <= full


def test_a_cell_id_is_the_same_run_in_every_table() -> None:
    """Tables share runs by id, so an id must mean one config + overrides per mode."""
    for mode in ("quick", "full"):
        seen: dict[str, frozenset] = {}
        for table in TABLES.values():
            for cell in table.cells_of(mode):
                if cell.kind != "train":
                    continue
                recipe = frozenset(_fmt(cell.recipe, s, mode) for s in cell.scales)
                assert seen.setdefault(cell.id, recipe) == recipe, (mode, table.key, cell.id)


def test_every_cell_is_trained_at_the_scales_it_is_measured_at() -> None:
    """A run evaluated at a scale its config never trained (say an x2-only data-free VDSR measured at x4) would
    put a meaningless number in a table: each trained cell's resolved config must cover all of its scales."""
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    for mode in ("quick", "full"):
        for table in TABLES.values():
            for cell in table.cells_of(mode):
                if cell.kind != "train":
                    continue
                for s in cell.scales:
                    stem, overrides = _fmt(cell.recipe, s, mode)
                    cfg = load_config(TrainConfig, configs / f"{stem}.yaml", list(overrides))
                    trained = getattr(cfg.method, "scales", None) or [cfg.scale]
                    assert s in trained, (mode, table.key, cell.id, s, trained)


def test_dfsr_ablation_switches() -> None:
    cells = {c.label: c for c in TABLES["dfsr-table2"].cells}
    noise = ("method.inputs=noise", "method.adversarial=false", "method.reconstruction=false",
             "method.progressive=false")
    assert cells["M1"].recipe.overrides == (*noise, "method.noise_size=input")  # VDSR's input-size noise
    assert cells["M1 (LR noise)"].recipe.overrides == noise
    assert cells["DFAD"].recipe.overrides == ("method.adversarial=true", "method.reconstruction=false",
                                              "method.progressive=false")
    assert cells["Ours"].recipe.overrides == () and cells["Ours"].id == "datafree-vdsr"
    # Table 2's runs are measured at x2; in --full they are the paper's multi-scale runs that Table 1 shares
    assert cells["M1"].id == next(c.id for c in TABLES["dfsr-table1"].cells_of("full") if c.label == "Noise")
    # the w_R sweep scales each mode's own recipe weight; x0 is the M4 run, x1 the full method
    for mode, w in (("quick", 30.0), ("full", 1.0)):
        sweep = {c.label: c for c in TABLES["dfsr-fig4"].cells_of(mode)}
        assert sweep[f"{w:g} (x1)"].id == "datafree-vdsr" and sweep["0 (x0)"].id == cells["M4"].id
        assert sweep[f"{2 * w:g} (x2)"].recipe.overrides == (f"method.w_r={2 * w:g}",)


def test_wr_sweep_factors_scale_the_recipes_own_weight() -> None:
    """WR_RECIPE repeats method.w_r of the two VDSR recipes (the tables are built without reading configs)."""
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig
    from srkd.reproduce import VDSR_DF, WR_RECIPE

    for mode in ("quick", "full"):
        cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / f"{VDSR_DF.stem(mode)}.yaml")
        assert cfg.method.w_r == WR_RECIPE[mode]


def test_dukd_fig4_trains_three_student_widths_per_method() -> None:
    """The gain-vs-parameters figure needs, per student width, a scratch run and distilled runs of that very
    student; the recipe's own width is Table 2's run (same id), the others only change n_feats."""
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    t2 = {c.id for c in TABLES["dukd-table2"].cells}
    for mode, widths in (("quick", (8, 16, 32)), ("full", (32, 64, 128))):
        cells = TABLES["dukd-fig4"].cells_of(mode)
        assert len(cells) == 9 and all(c.kind == "train" and c.scales == (4,) for c in cells)
        seen = set()
        for c in cells:
            stem, overrides = _fmt(c.recipe, 4, mode)
            cfg = load_config(TrainConfig, configs / f"{stem}.yaml", list(overrides))
            f = cfg.student.kwargs["n_feats"]
            assert dict(c.row)["student"] == f"EDSR {f}f/32b" and cfg.method.name == c.label.lower()
            assert (c.id in t2) == (f == widths[1])
            # one learning rate per width, whatever the method: the quick 32f students run at half the recipe's
            base = load_config(TrainConfig, configs / f"{stem}.yaml").optim.lr
            assert cfg.optim.lr == (base / 2 if (mode, f) == ("quick", 32) else base)
            seen.add((f, c.label))
        assert seen == {(f, m) for f in widths for m in ("Scratch", "KD", "DUKD")}


def test_a_run_of_the_recipe_before_precision_auto_is_still_its_run(tmp_path: Path) -> None:
    """The quick recipes said ``precision: bf16`` until they said ``auto``: their finished runs must not be refused
    as "another config"; any other difference still is."""
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig
    from srkd.reproduce.planner import _same_config

    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "edsr-x4-dukd-quick.yaml")
    assert cfg.train.precision == "auto"
    saved = cfg.model_dump(mode="json")
    for key, value, same in (("precision", "bf16", True), ("iterations", 999, False)):
        old = json.loads(json.dumps(saved))
        old["train"][key] = value
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
        assert _same_config(tmp_path, cfg) is same, key


def test_a_run_from_before_a_setting_existed_is_still_its_recipes_run(tmp_path: Path) -> None:
    """A finished cell must survive an upgrade of srkd that adds a setting (with a default) to the configs:
    its config.yaml lacks the key, which is not "another config"; a key whose value changed still is."""
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig
    from srkd.reproduce.planner import _same_config

    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[1] / "configs" / "datafree-edsr-quick.yaml")
    old = cfg.model_dump(mode="json")
    del old["method"]["progressive"]["init"]  # added after the DFSR Table 4 quick runs were made
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert _same_config(tmp_path, cfg)
    old["method"]["progressive"]["init"] = "identity"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert not _same_config(tmp_path, cfg)


def test_edsr_teachers_are_named_per_mode() -> None:
    cell = next(c for c in TABLES["dfsr-table4"].cells if c.id == "datafree-edsr-x3")
    assert "teacher.checkpoint=teachers/edsr64-x3.safetensors" in _fmt(cell.recipe, 3, "quick")[1]
    assert "teacher.checkpoint=teachers/edsr256-x3.safetensors" in _fmt(cell.recipe, 3, "full")[1]


# -- the plan --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["quick", "full"])
@pytest.mark.parametrize("table", sorted(EXPECTED))
def test_dry_run_prints_the_plan_and_runs_nothing(table: str, mode: str, tmp_path: Path, bench: Path, capsys) -> None:
    empty = tmp_path / "configs"
    empty.mkdir()
    out = tmp_path / "out"
    code = main(["reproduce", table, f"--{mode}", "--dry-run", "--configs", str(empty), "--out", str(out),
                 "--data", str(bench)])
    text = capsys.readouterr().out
    assert code == 0
    assert not out.exists()
    assert text.startswith(f"{table} (--{mode}):")
    for cell in TABLES[table].cells_of(mode):
        assert cell.id in text
        if cell.kind == "train":
            stem, _ = _fmt(cell.recipe, cell.scales[0], mode)
            assert f"srkd train {empty / (stem + '.yaml')}" in text
            assert f"--out {out / cell.id}" in text
    assert "missing or blocking" in text and f"config {empty}" in text


def test_missing_files_are_one_error_naming_each_once(tmp_path: Path, bench: Path, capsys) -> None:
    empty = tmp_path / "configs"
    empty.mkdir()
    code = main(["reproduce", "dfsr-table1", "--configs", str(empty), "--out", str(tmp_path / "o"),
                 "--data", str(bench)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dfsr-table1 --quick cannot start; missing or blocking: ")
    assert lines[0].count("datafree-vdsr-quick.yaml") == 1 and lines[0].count("vdsr-half-scratch-quick.yaml") == 1
    assert "cells vdsr-half-scratch-x2, vdsr-half-scratch-x3, vdsr-half-scratch-x4" in lines[0]
    assert not (tmp_path / "o").exists()


def test_plan_overrides_statuses_and_problems(tmp_path: Path, configs: Path, bench: Path) -> None:
    out = tmp_path / "o"
    p = plan("dukd-table4", "quick", out=out, configs_dir=configs, sets=[str(bench)], overrides=["seed=3"])
    assert p.sets == ["Tiny"] and not p.problems
    by_id = {c.cell.id: c for c in p.cells}
    assert set(by_id) == {"edsr-x4-dukd-none", "edsr-x4-dukd-zi", "edsr-x4-dukd-zo", "edsr-x4-dukd-zi-zo",
                          "edsr-x4-dukd-zi-aug", "edsr-x4-dukd"}
    none = by_id["edsr-x4-dukd-none"]
    assert none.status == "train" and none.run_dir == out / "edsr-x4-dukd-none"
    assert none.overrides == ["method.zoom_in=false", "method.zoom_out=false", "method.augment=false", "seed=3"]
    assert (none.cfg.method.zoom_in, none.cfg.method.augment, none.cfg.seed) == (False, False, 3)
    assert none.cfg.out_dir == str(out / "edsr-x4-dukd-none")
    assert by_id["edsr-x4-dukd"].cfg.method.zoom_out is True

    # a stale run folder (another config) and an interrupted one
    stale = out / "edsr-x4-dukd-zi"
    stale.mkdir(parents=True)
    (stale / "config.yaml").write_text(yaml.safe_dump({"name": "other", "scale": 4}))
    partial = out / "edsr-x4-dukd-zo"
    (partial / "ckpt").mkdir(parents=True)
    (partial / "ckpt" / "iter_00000002.pt").write_bytes(b"x")
    p = plan("dukd-table4", "quick", out=out, configs_dir=configs, sets=[str(bench)], only=["edsr-x4-dukd-zi", "edsr-x4-dukd-zo"])
    assert [c.cell.id for c in p.cells] == ["edsr-x4-dukd-zi", "edsr-x4-dukd-zo"]
    assert any("holds a run of another config" in m for m in p.problems)
    assert any(f"{partial} holds an unfinished run: continue it with --resume" in m for m in p.problems)
    p = plan("dukd-table4", "quick", out=out, configs_dir=configs, sets=[str(bench)], only=["edsr-x4-dukd-zo"], resume=True)
    assert p.cells[0].status == "resume" and not p.problems
    assert "--resume auto" in p.describe()

    # a teacher of another scale, a teacher that is not there, a bad override, an unknown table, an empty filter
    p = plan("dukd-table4", "quick", out=out, configs_dir=configs, sets=[str(bench)], only=["edsr-x4-dukd"],
             overrides=["scale=2"])
    assert [c.status for c in p.cells] == ["blocked"]
    assert "is a x4 model, the cell needs x2" in p.problems[0]
    cfg = yaml.safe_load((configs / "edsr-x4-dukd-quick.yaml").read_text())
    Path(cfg["teacher"]["checkpoint"]).unlink()
    p = plan("dukd-table4", "quick", out=out, configs_dir=configs, sets=[str(bench)], only=["edsr-x4-dukd"])
    assert p.problems == [f"teacher checkpoint {cfg['teacher']['checkpoint']} (named by "
                          f"{configs / 'edsr-x4-dukd-quick.yaml'}) (cell edsr-x4-dukd)"]
    p = plan("dukd-table4", "quick", out=out, configs_dir=configs, sets=[str(bench)], overrides=["train.lrr=1"])
    assert any("unknown key 'train.lrr'" in m for m in p.problems)
    from srkd.errors import SrkdError

    with pytest.raises(SrkdError, match="unknown table"):
        plan("dukd-table9")
    with pytest.raises(SrkdError, match="no cell matches"):
        plan("dukd-table4", only=["nothing"], configs_dir=configs)


# -- one table, end to end -------------------------------------------------------------------------------
def test_reproduce_trains_evaluates_skips_resumes_and_reports(
    tmp_path: Path, configs: Path, bench: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "o"
    args = ["reproduce", "dukd-table4", "--only", "edsr-x4-dukd", "--configs", str(configs), "--out", str(out),
            "--data", str(bench), "--device", "cpu", "-q"]
    assert main(args) == 0, capsys.readouterr().err
    run = out / "edsr-x4-dukd"
    results = read_results(run / RESULTS_FILE, run / "last.safetensors")
    psnr = results[4]["Tiny"]["psnr_y"]
    assert results[4]["Tiny"]["n"] == 2
    md = (out / "dukd-table4" / "report.md").read_text()
    assert f"| DUKD (all) | ✓ | ✓ | ✓ | {psnr:.2f} | {results[4]['Tiny']['ssim_y']:.4f} |" in md
    html = (out / "dukd-table4" / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 3  # loss curves, visual comparison, agreement
    # the paper's layout has no teacher row: the teacher and bicubic are shown beside it
    entries = json.loads((out / "dukd-table4" / "report.json").read_text())["entries"]
    teacher = next(e for e in entries if e["method"] == "Teacher")
    aside = md[md.index("## Teachers and bicubic, measured alongside"):md.index("## Runs")]
    assert f"| {teacher['psnr']:.2f} | {teacher['ssim']:.4f} |" in aside and "Bicubic PSNR" in aside
    assert "DUKD (all)" not in aside

    # interrupted after iteration 2: refused without --resume, continued with it
    (run / "last.safetensors").unlink()
    (run / "ckpt" / "iter_00000004.pt").unlink()
    capsys.readouterr()
    assert main(args) == 2
    assert "holds an unfinished run: continue it with --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    starts = [r for r in log if r["type"] == "start"]
    assert starts[-1]["step"] == 2 and starts[-1]["resumed_from"].endswith("iter_00000002.pt")
    assert [s for s, _ in ckpt.list_checkpoints(run)][-1] == 4

    # finished and measured: nothing is trained or evaluated again, the report is rebuilt
    def boom(*a, **k):
        raise AssertionError("should be skipped")

    monkeypatch.setattr("srkd.engine.trainer.train", boom)
    monkeypatch.setattr("srkd.evaluation.evaluate_model", boom)
    p = plan("dukd-table4", "quick", out=out, configs_dir=configs, sets=[str(bench)], only=["edsr-x4-dukd"])
    assert [c.status for c in p.cells] == ["done"]
    md_path, html_path = execute(p, device="cpu", progress=False, log=lambda m: None)
    assert md_path.read_text().count("| DUKD (all) |") >= 1 and html_path.is_file()
