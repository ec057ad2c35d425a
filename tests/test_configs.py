"""The shipped recipes: every YAML under configs/ is a valid TrainConfig, and ``srkd reproduce`` finds (and can
load, with its overrides) a config for every cell of every paper table in both modes.

Only schema validation: nothing is trained and teacher checkpoints need not exist (a missing teacher is an
expected "blocked" reason, a missing or invalid config is not).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from srkd.config_base import load_config
from srkd.data import registry
from srkd.engine.config import TrainConfig
from srkd.reproduce import TABLES, plan

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))
MODES = ("quick", "full")
# What a cell may legitimately be blocked by before anything was trained: files the recipes name.
FILE_PROBLEMS = ("teacher checkpoint ", "student.init checkpoint ")


def test_configs_folder_is_not_empty() -> None:
    assert len(ALL_YAML) >= 60, [p.name for p in ALL_YAML]


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_validates(path: Path) -> None:
    cfg = load_config(TrainConfig, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), f"{path.name}: starts with a header comment saying what it is"
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    assert "srkd " in header, f"{path.name}: the header names the command"
    if path.parent.name == "teachers":
        assert cfg.method.name == "scratch" and cfg.teacher is None


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], object]:
    out = tmp_path_factory.mktemp("reproduce")
    return {(t, m): plan(t, m, out=out / m, configs_dir=CONFIGS) for t in TABLES for m in MODES}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("table", list(TABLES))
def test_reproduce_finds_a_config_for_every_cell(plans: dict, table: str, mode: str) -> None:
    p = plans[(table, mode)]
    assert p.cells, f"{table} --{mode} has no cell"
    for c in p.cells:
        if c.cell.kind == "bicubic":
            continue
        assert c.config is not None and c.config.is_file(), f"{c.cell.id}: missing {c.config}"
        # every problem left is a file the recipe names (a teacher to train or ship), never the config itself
        assert all(m.startswith(FILE_PROBLEMS) for m in c.problems), (c.cell.id, c.problems)
        if c.cell.kind == "train":
            assert c.cfg is not None, (c.cell.id, c.problems)
            assert c.cfg.scale in c.scales, f"{c.cell.id}: config scale x{c.cfg.scale}, cell {c.scales}"


def _cfg(stem: str, overrides: tuple[str, ...] = ()) -> TrainConfig:
    return load_config(TrainConfig, CONFIGS / f"{stem}.yaml", list(overrides))


@pytest.mark.parametrize("mode", MODES)
def test_dukd_table2_methods_share_student_data_and_schedule(plans: dict, mode: str) -> None:
    """A fair comparison: within one backbone and scale, only the method (and its teacher) differs.
    CSD is the exception by design: its student is a slimmable copy of the teacher, sliced to 1/4 width, and in
    --quick its Adam lr is a tenth of the others' (2e-3 wrecks the pretrained weights it starts from)."""
    groups: dict[tuple[str, int], list[TrainConfig]] = {}
    for c in plans[("dukd-table2", mode)].cells:
        groups.setdefault((dict(c.cell.row)["model"], c.scales[0]), []).append(c.cfg)
    assert len(groups) == (3 if mode == "quick" else 9)
    for key, cfgs in groups.items():
        def fair(cfg: TrainConfig, lr: bool = True) -> dict:
            d = cfg.model_dump(mode="json")
            if not lr:
                d["optim"].pop("lr")
            return {k: d[k] for k in ("seed", "scale", "data", "optim", "sched", "train")}

        def own_lr(cfg: TrainConfig) -> bool:
            return cfg.method.name == "csd" and mode == "quick"

        same = [c for c in cfgs if not own_lr(c)]
        first = fair(same[0])
        assert all(fair(c) == first for c in same), key
        for c in filter(own_lr, cfgs):
            assert fair(c, lr=False) == fair(same[0], lr=False), key
            assert c.optim.lr == same[0].optim.lr / 10 and getattr(c.method, "init_from_teacher", False), key
        students = {repr((c.student.arch, sorted(c.student.kwargs.items()))) for c in cfgs if c.method.name != "csd"}
        assert len(students) == 1, (key, students)
        teachers = {c.teacher.checkpoint for c in cfgs if c.teacher is not None}
        assert len(teachers) == 1, (key, teachers)


def test_full_recipes_use_the_paper_settings() -> None:
    for stem in ("edsr-x2-dukd", "rcan-x3-kd", "swinir-x4-scratch", "edsr-rcan-x4-dukd", "edsr64-x4-dukd"):
        cfg = _cfg(stem)
        assert cfg.data.train == ["DIV2K"] and cfg.data.batch_size == 16 and cfg.data.lr_patch == 48
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.betas) == ("adam", 1e-4, (0.9, 0.99))
        assert (cfg.sched.milestones, cfg.sched.gamma) == ([100000, 200000], 0.1)
        assert (cfg.train.iterations, cfg.train.ema, cfg.seed, cfg.train.device) == (250000, 0.999, 10, "auto")
    assert _cfg("edsr-x4-dukd").method.pix_weight == 5.0 and _cfg("swinir-x2-dukd").method.pix_weight == 5.0
    assert 1.0 <= _cfg("rcan-x2-dukd").method.pix_weight <= 2.0
    assert _cfg("swinir-x3-dukd").method.zoom_out is False and _cfg("edsr-x3-dukd").method.zoom_out is True
    csd = _cfg("edsr-x4-csd").method
    assert (csd.width, csd.contrast_weight) == (0.25, 200.0)
    fakd = _cfg("rcan-x2-fakd").method
    assert (fakd.alpha, fakd.feature_weight) == (0.5, 10.0)
    teacher = _cfg("edsr-x4-kd").teacher
    assert teacher is not None and teacher.checkpoint == "teachers/edsr256-x4.safetensors"
    quick = _cfg("edsr-x4-kd-quick").teacher  # the 64f/32b teacher has a name of its own
    assert quick is not None and quick.checkpoint == "teachers/edsr64-x4.safetensors"
    big = load_config(TrainConfig, CONFIGS / "teachers" / "edsr256-32-x2.yaml")
    assert big.student.kwargs == {"n_feats": 256, "n_resblocks": 32, "res_scale": 0.1}
    assert load_config(TrainConfig, CONFIGS / "teachers" / "rcan-20-x4.yaml").student.kwargs["n_resblocks"] == 20
    assert load_config(TrainConfig, CONFIGS / "teachers" / "swinir-180-x3.yaml").student.kwargs["embed_dim"] == 180


def test_quick_recipes_fit_a_small_cpu() -> None:
    quick = [p for p in CONFIGS.glob("*-quick.yaml")]
    assert len(quick) >= 15
    for path in quick:
        cfg = load_config(TrainConfig, path)
        assert cfg.train.precision == "auto" and cfg.train.channels_last, path.name  # bf16 where it is native
        assert cfg.train.iterations <= 5000, path.name
        assert all(registry.lookup(d) is not None for d in cfg.data.train), path.name  # found under the data root
    assert _cfg("edsr-x4-fakd-quick").method.max_positions < 48 * 48  # affinities subsampled: a step stays cheap


def test_overrides_of_the_tables_apply() -> None:
    """The ablation switches reproduce.py passes must land in the method config (not be silently ignored)."""
    cfg = _cfg("edsr-x4-dukd-quick", ("method.zoom_in=false", "method.zoom_out=true", "method.augment=false"))
    assert (cfg.method.zoom_in, cfg.method.zoom_out, cfg.method.augment) == (False, True, False)
    cfg = _cfg("edsr-half-scratch-quick", ("scale=3",))
    assert cfg.scale == 3


def test_reproduce_dry_run_cli_lists_every_cell(tmp_path: Path) -> None:
    """The user's view: ``srkd reproduce TABLE --quick --dry-run`` runs without a traceback and names no missing
    config (teachers may be missing: they are files to train, listed as such)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "srkd.cli.main", "reproduce", "dukd-table4", "--quick", "--dry-run",
         "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "edsr-x4-dukd-zi" in out and "configs/edsr-x4-dukd-quick.yaml" in out
    assert "! config " not in out


@pytest.mark.parametrize("override", ["sched.milestones=[500, 500]", "sched.milestones=[750, 500]",
                                      "sched.milestones=[0]"])
def test_a_repeated_or_unsorted_milestone_is_a_clear_error(override: str) -> None:
    """MultiStepLR would silently decay twice at a repeated milestone; srkd refuses the schedule instead."""
    from srkd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'sched.milestones': .*strictly increasing"):
        _cfg("edsr-x4-kd-quick", (override,))
    assert _cfg("edsr-x4-kd-quick", ("sched.milestones=[500, 750]",)).sched.milestones == [500, 750]


def test_the_generator_schedule_is_checked_the_same_way() -> None:
    from srkd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"generator.sched.milestones': .*strictly increasing"):
        _cfg("datafree-vdsr-quick", ("method.generator.sched.milestones=[300, 300]",))


def test_keys_of_the_previous_layout_name_their_new_spelling() -> None:
    from srkd.errors import ConfigError

    for old, new in (("method.gen_lr=1e-4", "method.gen_lr moved: use method.generator.optim.lr"),
                     ("method.gen_every=5", "method.gen_every moved: use method.generator.every"),
                     ("method.growth_init=identity", "method.growth_init moved: use method.progressive.init"),
                     ("method.stage_optimizer=carry", "use method.progressive.optimizer"),
                     ("method.stages=[5, 15]", "method.stages moved: use method.progressive.stages"),
                     ("method.max_skips=3", "use train.max_skips")):
        with pytest.raises(ConfigError, match=re.escape(new)) as err:
            _cfg("datafree-vdsr-quick", (old,))
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=re.escape("method.growth_init moved: use method.progressive.init")):
        _cfg("edsr-x4-kd-quick", ("method.growth_init=identity",))
    # the ablation switch of the reproduce tables: `true` keeps a recipe's growth, and asks for stages elsewhere
    grow = _cfg("datafree-vdsr-quick", ("method.progressive=true",)).method.progressive
    assert grow is not None and grow.stages == [150, 850]
    with pytest.raises(ConfigError, match=re.escape("method.progressive: true needs the growth's stages")):
        _cfg("edsr-x4-kd-quick", ("method.progressive=true",))


def test_progressive_growth_is_every_output_level_methods_but_fakd_and_csd_refuse_it() -> None:
    from srkd.errors import ConfigError

    for recipe in ("edsr-x4-kd-quick", "edsr-x4-dukd-quick"):
        cfg = _cfg(recipe, ("method.progressive.stages=[5, 15]", "train.iterations=20"))
        assert cfg.method.progressive is not None and cfg.method.stage_lengths(20) == [5, 15]
        assert _cfg(recipe, ("method.progressive=false",)).method.progressive is None
    for recipe in ("edsr-x4-fakd-quick", "edsr-x4-csd-quick"):
        with pytest.raises(ConfigError, match=r"method.progressive: (FAKD|CSD) .*remove it$") as err:
            _cfg(recipe, ("method.progressive.stages=[5, 15]", "train.iterations=20"))
        assert "\n" not in str(err.value)


def test_a_data_free_run_shorter_than_its_stages_is_refused_with_scaled_stages() -> None:
    """Cutting train.iterations of a progressive recipe would silently ship the stage-0 (shallower) student."""
    from srkd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"datafree-edsr-quick.yaml: method.progressive.stages \[150, 850\]: the "
                                          r"student reaches its full depth at iteration 150, but train.iterations is "
                                          r'20.*--set "method.progressive.stages=\[3, 17\]"'):
        _cfg("datafree-edsr-quick", ("train.iterations=20",))
    ok = _cfg("datafree-edsr-quick", ("train.iterations=20", "method.progressive.stages=[3, 17]"))
    assert ok.method.progressive is not None and ok.method.progressive.stages == [3, 17]
    assert _cfg("datafree-edsr-quick", ("train.iterations=151",)).train.iterations == 151  # grows at 150: fine
    with pytest.raises(ConfigError, match="give at least one iteration per stage"):
        _cfg("datafree-edsr-quick", ("train.iterations=1",))
