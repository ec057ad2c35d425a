"""tools/train_teachers_timed.py: the arithmetic that turns a measured speed into a recipe, and the data remapping
that points a recipe at the copy of the images a borrowed machine holds. (The tool's whole run, probe, training
and export, is a few minutes of CPU for tiny budgets: checked by hand, not in the default suite.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from srkd.config_base import load_config
from srkd.engine.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_teachers_timed", ROOT / "tools" / "train_teachers_timed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = _load_tool()


def test_plan_fills_the_budget_and_places_the_milestones() -> None:
    iters, miles = TOOL.plan(rate=20.0, minutes=10, floor=150)
    assert iters == 11100  # 20 it/s x 600 s x 0.93 = 11160, down to hundreds
    assert miles == [5550, 8325, 9990]
    assert TOOL.plan(rate=0.01, minutes=1, floor=150)[0] == 150  # never fewer than the probe ran


def test_data_overrides_remap_every_path_and_validate() -> None:
    cfg = ROOT / "configs" / "teachers" / "rcan-10-x4-gpu.yaml"
    overrides = TOOL.data_overrides(cfg.read_text(), [("../shared/data/train", "/tmp/data"),
                                                         ("../shared/data/benchmarks", "/tmp/data")])
    loaded = load_config(TrainConfig, cfg, overrides)
    assert loaded.data.train == ["/tmp/data/T91", "/tmp/data/BSD200", "/tmp/data/General100"]
    assert loaded.data.val == ["/tmp/data/Set5/HR"]
