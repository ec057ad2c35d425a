"""The bundled teacher's published PSNR/SSIM (README, benchmarks/results/teacher-edsr64-16-x2-eval.json) is what
``srkd eval`` measures today, within 0.01 dB: a changed metric, resize or model code cannot silently move it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path

from srkd.evaluation import evaluate_model

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "src" / "srkd" / "assets" / "teachers" / "edsr64-16-x2.safetensors"
STATED = json.loads((ROOT / "benchmarks" / "results" / "teacher-edsr64-16-x2-eval.json").read_text())


@pytest.mark.parametrize("name", ["Set5", pytest.param("Set14", marks=pytest.mark.slow),
                                  pytest.param("B100", marks=pytest.mark.slow)])
def test_bundled_teacher_matches_its_stated_scores(name: str) -> None:
    folder = shared_path("data", "benchmarks", name, "HR")
    got = evaluate_model(str(TEACHER), [str(folder)], 2, progress=False)[name]
    assert got["n"] == STATED[name]["n"]
    assert abs(got["psnr_y"] - STATED[name]["psnr_y"]) <= 0.01
    assert abs(got["ssim_y"] - STATED[name]["ssim_y"]) <= 1e-4
