"""Every committed teacher's published PSNR/SSIM (docs/results.md; the eval JSON beside its training record in
benchmarks/results/) is what ``srkd eval`` measures today, within 0.01 dB: a changed metric, resize or model code
cannot silently move them. Set5 runs by default, Set14 and B100 with the slow tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path

from srkd.evaluation import evaluate_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# (weights, scale, the eval JSON that states its scores)
TEACHERS = {
    "edsr64-16-x2 (bundled)": (ROOT / "src" / "srkd" / "assets" / "teachers" / "edsr64-16-x2.safetensors", 2,
                               RESULTS / "teacher-edsr64-16-x2-eval.json"),
    **{f"edsr64-32-x{s}": (ROOT / "teachers" / f"edsr64-x{s}.safetensors", s,
                           RESULTS / "teachers" / f"edsr64-32-x{s}" / "eval.json") for s in (2, 3, 4)},
    "edsr64-32-x4-long": (ROOT / "teachers" / "edsr64-x4-long.safetensors", 4,
                          RESULTS / "teachers" / "edsr64-32-x4-long" / "eval.json"),
    "rcan-10-x4": (ROOT / "teachers" / "rcan-x4.safetensors", 4, RESULTS / "teachers" / "rcan-10-x4" / "eval.json"),
    "swinir-60-x4": (ROOT / "teachers" / "swinir-x4.safetensors", 4, RESULTS / "teachers" / "swinir-60-x4" / "eval.json"),
}
CASES = [
    pytest.param(teacher, name, id=f"{teacher}-{name}", marks=() if name == "Set5" else pytest.mark.slow)
    for teacher in TEACHERS for name in ("Set5", "Set14", "B100")
]


def test_every_committed_teacher_states_its_scores() -> None:
    committed = {p.name for p in (ROOT / "teachers").glob("*.safetensors")}
    assert committed == {path.name for path, _s, _j in TEACHERS.values() if path.parent == ROOT / "teachers"}
    for path, _scale, stated in TEACHERS.values():
        assert path.is_file() and stated.is_file(), path


@pytest.mark.parametrize(("teacher", "name"), CASES)
def test_teacher_matches_its_stated_scores(teacher: str, name: str) -> None:
    path, scale, stated_json = TEACHERS[teacher]
    stated = json.loads(stated_json.read_text())[name]
    folder = shared_path("data", "benchmarks", name, "HR")
    got = evaluate_model(str(path), [str(folder)], scale, progress=False)[name]
    assert got["n"] == stated["n"]
    assert abs(got["psnr_y"] - stated["psnr_y"]) <= 0.01
    assert abs(got["ssim_y"] - stated["ssim_y"]) <= 1e-4
