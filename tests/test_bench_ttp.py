"""``srkd bench time-to-psnr``: both loops train on the clock from the same student, evaluation stays off the
clock, and the result comes with its plot."""

from __future__ import annotations

import json

import pytest

from srkd.bench.ttp import minutes_to_reach
from srkd.cli.main import main


def test_minutes_to_reach_interpolates_between_evaluations():
    curve = [{"minutes": 0.0, "psnr_y": 20.0}, {"minutes": 1.0, "psnr_y": 24.0}, {"minutes": 2.0, "psnr_y": 26.0}]
    assert minutes_to_reach(curve, 20.0) == 0.0
    assert minutes_to_reach(curve, 22.0) == pytest.approx(0.5)
    assert minutes_to_reach(curve, 25.0) == pytest.approx(1.5)
    assert minutes_to_reach(curve, 27.0) is None


def run_ttp(tmp_path, *extra: str) -> tuple[dict, bytes]:
    pytest.importorskip("cv2")  # the BasicSR-style loop's zoom-out uses BasicSR's imresize (dev extra)
    from reference import basicsr_reference

    basicsr_reference()
    out, plot = tmp_path / "bench.json", tmp_path / "ttp.png"
    assert main(["bench", "time-to-psnr", "--quick", "--device", "cpu", "--methods", "kd", "--minutes", "0.02",
                 "--eval-every", "0.6", "--plot", str(plot), "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())["results"]["time-to-psnr"], plot.read_bytes()


def test_time_to_psnr_quick(tmp_path):
    result, png = run_ttp(tmp_path)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    run = result["metrics"]["runs"]["kd"]
    budget = run["budget_s"]
    loops = run["loops"]
    assert set(loops) == {"srkd", "basicsr"}
    assert loops["srkd"]["curve"][0]["psnr_y"] == loops["basicsr"]["curve"][0]["psnr_y"]  # same initial student
    for v in loops.values():
        minutes = [p["minutes"] for p in v["curve"]]
        assert minutes[0] == 0 and minutes == sorted(minutes) and len(minutes) >= 3
        # only training is on the clock: it stops within one step of the budget, whatever evaluation took
        assert budget <= v["train_s"] <= budget + 2.0 and v["steps"] > 0
        assert minutes[-1] == pytest.approx(v["train_s"] / 60)
    (row,) = result["comparisons"]
    assert row["name"] == "kd training step" and row["ratio"] > 0
    assert "time_to_psnr_speedup" in run and "random edsr" in run["teacher"]


def test_time_to_psnr_on_set5(tmp_path, shared_data_root):
    result, _ = run_ttp(tmp_path, "--eval-set", "Set5", "--data-root", str(shared_data_root), "--loops", "srkd")
    run = result["metrics"]["runs"]["kd"]
    assert run["eval_set"] == "Set5" and set(run["loops"]) == {"srkd"}
    assert 5.0 < run["loops"]["srkd"]["final_psnr_y"] < 40.0
