"""``srkd bench``: the --quick smoke run of every benchmark and the JSON it writes. Speed is never asserted here
(benchmarks/README.md holds the measurements); what is asserted is the schema, the arithmetic of the ratios,
and the behaviour the benchmarks rely on (parity with BasicSR, seam-free tiling, what the baseline really does)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from reference import basicsr_reference

from srkd.bench import ALL, BENCHMARKS
from srkd.bench.common import comparison, interleaved, ratio_text, speedup, summarize, target
from srkd.bench.kd_step import device_peak_tflops
from srkd.cli.main import main

TIMING_KEYS = {"times_s", "median_s", "min_s", "mean_s"}


def run_quick(name: str, tmp_path, *extra: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["bench", name, "--quick", "--json", str(out), *extra]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "srkd-bench/1"
    assert {"command", "date", "commit", "dirty", "machine", "results"} <= set(report)
    assert {"cpu", "cpu_cores", "cpu_flags", "torch", "torch_threads", "device"} <= set(report["machine"])
    result = report["results"][name]
    assert result["benchmark"] == name and result["quick"] is True
    assert {"config", "comparisons", "metrics", "targets", "wall_s", "load_avg_before", "peak_rss_mb"} <= set(result)
    assert result["wall_s"] > 0 and result["peak_rss_mb"] > 0
    for row in result["comparisons"]:
        assert TIMING_KEYS <= set(row["baseline"]) and TIMING_KEYS <= set(row["ours"])
        assert math.isclose(row["ratio"], row["baseline"]["median_s"] / row["ours"]["median_s"], rel_tol=1e-9)
        assert all(t > 0 for t in row["baseline"]["times_s"] + row["ours"]["times_s"])
    for t in result["targets"]:
        assert {"what", "value", "op", "target", "met"} <= set(t) and t["op"] in (">=", "<=")
    return result


def test_imresize_quick(tmp_path):
    basicsr_reference()  # skips without the BasicSR sdist
    result = run_quick("imresize", tmp_path)
    assert [r["name"] for r in result["comparisons"]] == ["down x1/4", "up x4"]
    assert all(v < 2e-5 for v in result["metrics"]["max_abs_diff_vs_basicsr"].values())
    assert all(r["ratio_cpu"] > 0 for r in result["comparisons"])


def test_kd_step_quick(tmp_path):
    basicsr_reference()
    result = run_quick("kd-step", tmp_path)
    rows = {r["name"]: r for r in result["comparisons"]}
    assert set(rows) == {"dukd", "kd"}
    for row in rows.values():
        # the baseline back-propagates through the teacher as well: more FLOPs per step than srkd's
        assert row["flops_per_step_baseline"] > row["flops_per_step_ours"] > 0
        assert row["mfu_ours"] is None  # no peak known for a CPU unless --peak-tflops
    assert rows["dukd"]["flops_per_step_ours"] > rows["kd"]["flops_per_step_ours"]


def test_sampler_quick(tmp_path):
    result = run_quick("sampler", tmp_path)
    row = result["comparisons"][0]
    assert row["batches_per_s"] > 0 and row["steps_per_s"] > 0


def test_eval_quick_matches_basicsr_protocol(tmp_path):
    basicsr_reference()
    result = run_quick("eval", tmp_path)
    assert result["metrics"]["max_abs_psnr_diff_db"] < 0.01


def test_upscale_quick(tmp_path):
    result = run_quick("upscale", tmp_path)
    full = result["metrics"]["full_run"]
    assert full["output_shape"] == [3, 256, 384] and full["peak_rss_mb"] > 0
    assert float(result["metrics"]["seam_psnr_db"]) >= 50  # "inf" when identical (strict JSON)


@pytest.mark.parametrize("native", [True, False])
def test_kd_accuracy_quick(tmp_path, monkeypatch, capsys, native):
    # where bf16 is emulated the benchmark still runs (it measures accuracy), says so and records it
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)  # oneDNN's probe
    result = run_quick("kd-accuracy", tmp_path, "--steps", "2", "--seeds", "0,1")
    assert result["config"]["bf16_native"] is native
    assert ("bf16 is emulated" in capsys.readouterr().err) is not native
    m = result["metrics"]
    runs = [(r["seed"], r["precision"]) for r in m["runs"]]
    assert runs == [(s, p) for s in (0, 1) for p in ("fp32", "fp32-cl", "bf16")]
    assert list(m["runs"][0]["psnr_y"]) == ["0", "1", "2"]
    # same initial weights per seed: identical before training, close after two steps; seeds differ
    for fp32, control, bf16 in (m["runs"][0:3], m["runs"][3:6]):
        assert fp32["psnr_y"]["0"] == control["psnr_y"]["0"] == bf16["psnr_y"]["0"]
    assert m["runs"][0]["psnr_y"]["0"] != m["runs"][3]["psnr_y"]["0"]
    assert abs(m["psnr_bf16_minus_fp32_db"]) < 0.05 and m["fp32_seed_spread_db"] > 0
    d0, d1 = (p["bf16_minus_fp32_db"] for p in m["per_seed"])
    assert m["psnr_bf16_minus_fp32_sem_db"] == pytest.approx(abs(d0 - d1) / 2)  # two seeds: half their gap
    # the control differs from fp32 only by summation order: far closer after two steps than bf16 may be
    assert m["control_abs_minus_fp32_db_mean"] < 0.005
    assert [p["control_minus_fp32_db"] for p in m["per_seed"]] == [
        m["runs"][1]["final_psnr_y"] - m["runs"][0]["final_psnr_y"],
        m["runs"][4]["final_psnr_y"] - m["runs"][3]["final_psnr_y"],
    ]


def test_registry_and_all():
    assert set(ALL) <= set(BENCHMARKS) and "kd-accuracy" not in ALL


def test_bad_options_are_one_line_errors(capsys):
    assert main(["bench", "sampler", "--quick", "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "kd-step", "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "CUDA" in err and "Traceback" not in err


def test_timing_helpers():
    calls = []
    timing = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # order flips every round
    assert len(timing["a"]["times_s"]) == 3 and len(timing["a"]["cpu_times_s"]) == 3
    row = comparison("x", summarize([2.0, 4.0, 3.0], [2.0, 2.0, 2.0]), summarize([1.0, 1.0, 2.0], [0.5, 0.5, 0.5]))
    assert row["ratio"] == 3.0 and row["ratio_best"] == 2.0 and row["ratio_cpu"] == 4.0
    assert row["ratio_paired"] == 2.0 and speedup(row) == 2.0  # rounds 2/1, 4/1, 3/2
    # The baseline ran slow in three rounds, srkd in a different one: the ratio of medians pairs timings from
    # different rounds (6 / 1), each round's own ratio is 3, 3, 6, 6, 3.
    skew = comparison("s", summarize([3.0, 6.0, 6.0, 6.0, 3.0]), summarize([1.0, 2.0, 1.0, 1.0, 1.0]))
    assert skew["ratio"] == 6.0 and skew["ratio_paired"] == 3.0
    single = comparison("one", summarize([2.0]), summarize([1.0]))
    assert single["ratio_paired"] is None and speedup(single) == 2.0
    assert ratio_text(row) == "2.00x (paired; medians 3.00x, best 2.00x, CPU time 4.00x)"
    assert target("t", 3.0, ">=", 4.0, cpu_value=5.0) == {
        "what": "t", "value": 3.0, "op": ">=", "target": 4.0, "met": False, "cpu_value": 5.0, "met_cpu": True
    }
    assert target("t", None, "<=", 1.0)["met"] is None


def test_json_accumulates_benchmarks_run_one_at_a_time(tmp_path):
    basicsr_reference()
    out = tmp_path / "all.json"
    assert main(["bench", "sampler", "--quick", "--json", str(out)]) == 0
    assert main(["bench", "imresize", "--quick", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"sampler", "imresize"}
    assert all({"command", "date", "commit"} <= set(r) for r in results.values())
    assert "sampler" in results["sampler"]["command"] and "imresize" in results["imresize"]["command"]


def test_compare_prints_the_paired_ratio_also_for_files_written_before_it(tmp_path):
    """benchmarks/compare.py recomputes the paired ratio from the stored times when the file has none."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    report = {
        "date": "d", "commit": "c", "machine": {"cpu": "x", "cpu_cores": 2, "cpu_flags": [], "torch": "t",
                                                 "torch_threads": 2, "device": "cpu"},
        "results": {"b": {"targets": [], "comparisons": [{
            "name": "n", "ratio": 6.0, "ratio_cpu": None,
            "baseline": {"times_s": [3.0, 6.0, 6.0, 6.0, 3.0], "median_s": 6.0},
            "ours": {"times_s": [1.0, 2.0, 1.0, 1.0, 1.0], "median_s": 1.0},
        }]}},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(report))
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "compare.py"), str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| b | n | 6.00 s | 1.00 s | 3.00x | 6.00x | - |" in out


def test_kd_step_compiled_with_a_peak_gives_an_mfu(tmp_path):
    """The GPU run's options on the CPU: ``torch.compile`` of both networks, and an MFU against the given peak."""
    basicsr_reference()
    out = tmp_path / "bench.json"
    assert main(["bench", "kd-step", "--quick", "--compile", "--peak-tflops", "2.5", "--methods", "kd",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"]["kd-step"]
    assert result["config"]["compile"] == "default" and result["metrics"]["peak_tflops"] == 2.5
    (row,) = result["comparisons"]
    assert "torch.compile(default)" in row["ours_label"]
    assert row["mfu_ours"] == pytest.approx(row["tflops_ours"] / 2.5)


def test_gpu_peaks_are_looked_up_by_device_name(monkeypatch):
    cuda = torch.device("cuda", 0)
    for name, peak in (("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4),
                       ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce GTX 1080", None)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert device_peak_tflops(cuda) == peak, name
    assert device_peak_tflops(cuda, override=100.0) == 100.0
    assert device_peak_tflops(torch.device("cpu")) is None
