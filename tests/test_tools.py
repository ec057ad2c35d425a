"""tools/train_teachers_timed.py: the arithmetic that turns a measured speed into a recipe, and the data remapping
that points a recipe at the copy of the images a borrowed machine holds; and, marked slow (~20 s of subprocesses),
the tool's whole run on tiny CPU recipes: probe, plan, training and fp16 export."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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


def test_plan_never_repeats_a_milestone() -> None:
    """MultiStepLR decays once per listed repeat: [2, 3, 3] would divide the rate by 25 at step 3."""
    for floor in range(1, 12):
        iters, miles = TOOL.plan(rate=0.0, minutes=1, floor=floor)
        assert miles == sorted(set(miles)) and all(0 < m < iters for m in miles), (floor, miles)


def test_data_overrides_remap_every_path_and_validate(tmp_path: Path) -> None:
    """Registry names (what the shipped recipes use) pass through: the device resolves them under $SRKD_DATA."""
    shipped = ROOT / "configs" / "teachers" / "rcan-10-x4-gpu.yaml"
    loaded = load_config(TrainConfig, shipped, TOOL.data_overrides(shipped.read_text(), [("../shared/data/train", "/x")]))
    assert loaded.data.train == ["T91", "BSD200", "General100"] and loaded.data.val == ["Set5"]
    text = shipped.read_text().replace("[T91, BSD200, General100]", "[../shared/data/train/T91, ../shared/data/train/BSD200]")
    cfg = tmp_path / "own.yaml"
    cfg.write_text(text.replace("val: [Set5]", "val: [../shared/data/benchmarks/Set5/HR]"))
    overrides = TOOL.data_overrides(cfg.read_text(), [("../shared/data/train", "/tmp/data"),
                                                      ("../shared/data/benchmarks", "/tmp/data")])
    loaded = load_config(TrainConfig, cfg, overrides)
    assert loaded.data.train == ["/tmp/data/T91", "/tmp/data/BSD200"]
    assert loaded.data.val == ["/tmp/data/Set5/HR"]


@pytest.mark.slow
def test_the_whole_tool_probes_trains_and_exports(tmp_path: Path) -> None:
    """Probe, plan, train and export end to end on two tiny CPU recipes (what a lent GPU session runs first)."""
    import json
    import subprocess
    import sys

    import torch
    import yaml
    from safetensors import safe_open
    from test_engine import cfg_dict

    from srkd.checkpoint.io import load_model

    configs = []
    for name, feats in (("tiny-a", 4), ("tiny-b", 6)):
        d = cfg_dict(tmp_path, "scratch", student={"arch": "edsr", "kwargs": {"n_feats": feats, "n_resblocks": 1}})
        d["name"] = name
        d["data"]["train"] = [d["data"]["train"][0].replace(str(tmp_path), "/nowhere")]  # remapped by --data
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(d))
        configs.append(path)
    out, runs = tmp_path / "out", tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train_teachers_timed.py"), *map(str, configs),
                           "--minutes", "0.01", "--probe", "8", "--log-every", "4", "--data", f"/nowhere={tmp_path}",
                           "--runs", str(runs), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["iterations"]) == {"tiny-a", "tiny-b"}
    for name, feats in (("tiny-a", 4), ("tiny-b", 6)):
        assert summary["iterations"][name] >= 8 and summary["probe_it_s"][name] > 0
        with safe_open(str(out / f"{name}.safetensors"), "pt") as fh:
            assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
        model, _meta = load_model(out / f"{name}.safetensors")
        assert model.head.out_channels == feats
        trained = load_config(TrainConfig, runs / name / "config.yaml")
        assert trained.train.iterations == summary["iterations"][name]
        assert (out / f"{name}.log.jsonl").is_file()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_summary_uses_only_complete_seeds_and_pairs_the_differences(tmp_path) -> None:
    import json

    tool = _load("summarize_paired")
    psnr = {("kd", 1): 30.0, ("kd", 2): 30.4, ("dukd", 1): 30.1, ("dukd", 2): 30.3, ("kd", 3): 31.0}
    for (method, seed), value in psnr.items():
        run = tmp_path / f"{method}-s{seed}-100"
        run.mkdir()
        (run / "eval.json").write_text(json.dumps({"Set5": {"psnr_y": value}}))
    summary = tool.summarize(tool.load(tmp_path, 100, ["kd", "dukd"]))
    assert summary["seeds"] == [1, 2]  # seed 3 has no DUKD run: left out, so every difference is paired
    pair = summary["paired"]["dukd - kd"]["Set5"]
    assert pair["diffs"] == pytest.approx([0.1, -0.1])
    assert pair["mean"] == pytest.approx(0.0) and pair["se"] == pytest.approx(0.1)
    assert summary["mean"]["Set5"]["kd"] == pytest.approx(30.2)
