"""``--json -`` on the commands that print results: stdout is one JSON document and nothing else (warnings and
progress stay on stderr), so ``srkd eval ... --json - | python -m json.tool`` works; and ``--device`` defaults to
``auto`` everywhere, as ``srkd train`` does."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from srkd.cli.main import main
from srkd.data.images import write_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hr(tmp_path: Path) -> Path:
    folder = tmp_path / "Tiny" / "HR"
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        write_image(folder / f"im{i}.png", torch.randint(0, 256, (3, 24, 20), generator=g, dtype=torch.uint8))
    return folder


def _stdout_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> object:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout: nothing printed beside the document


def test_eval_json_to_stdout_pipes_into_json_tool(hr: Path, tmp_path: Path) -> None:
    """The acceptance line, in real processes: `srkd eval ... --json - | python -m json.tool`."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SRKD_DATA": str(tmp_path / "root")}
    srkd = [sys.executable, "-m", "srkd.cli.main"]
    eval_ = subprocess.Popen([*srkd, "eval", "--model", "bicubic", "--scale", "2", "--data", str(hr), "--json", "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    tool = subprocess.run([sys.executable, "-m", "json.tool"], stdin=eval_.stdout, capture_output=True, text=True,
                          timeout=300)
    assert eval_.wait(timeout=300) == 0 and tool.returncode == 0, tool.stderr
    result = json.loads(tool.stdout)
    assert list(result) == ["Tiny"] and result["Tiny"]["n"] == 2 and 10 < result["Tiny"]["psnr_y"] < 60


def test_eval_per_image_and_file_forms(hr: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "root"))
    got = _stdout_json(["eval", "--model", "bicubic", "--scale", "2", "--data", str(hr), "--per-image", "-q",
                        "--json", "-"], capsys)
    assert [im["name"] for im in got["Tiny"]["images"]] == ["im0", "im1"]  # type: ignore[index]
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", "bicubic", "--scale", "2", "--data", str(hr), "-q", "--json", str(out)]) == 0
    assert "PSNR" in capsys.readouterr().out and json.loads(out.read_text())["Tiny"]["n"] == 2  # table + file


def test_metrics_json_is_strict_json(hr: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = _stdout_json(["metrics", "--hr", str(hr), "--sr", str(hr), "--scale", "2", "--json", "-"], capsys)
    assert got == {"images": [{"name": "im0", "psnr_y": None, "ssim_y": 1.0},  # identical: infinite PSNR
                              {"name": "im1", "psnr_y": None, "ssim_y": 1.0}], "mean": {"psnr_y": None, "ssim_y": 1.0}}


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    got = _stdout_json(["info", "edsr:n_feats=8,n_resblocks=1", "--scale", "2", "--no-latency", "--json", "-"],
                       capsys)
    assert got["arch"] == "edsr" and got["params"] > 0 and got["scale"] == 2  # type: ignore[index]


def test_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    got = _stdout_json(["bench", "imresize", "--quick", "--json", "-"], capsys)
    assert "imresize" in got["results"]  # type: ignore[index]


@pytest.mark.parametrize("command", ["eval", "upscale", "info", "bench", "report", "demo"])
def test_every_command_defaults_to_device_auto(command: str) -> None:
    from srkd.cli.main import COMMANDS

    parser = argparse.ArgumentParser()
    importlib.import_module(f"srkd.cli.{COMMANDS[command][0]}").add_arguments(parser)
    device = next(a for a in parser._actions if a.dest == "device")
    assert device.default == "auto"


def test_auto_is_cuda_when_there_is_one() -> None:
    from srkd.cli.output import pick_device
    from srkd.evaluation.upscale import resolve_device

    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto") == want and resolve_device("auto").type == want and pick_device("cpu") == "cpu"


def test_convert_and_export_json_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from srkd.checkpoint import save_model
    from srkd.models import build_model

    ckpt = save_model(tmp_path / "s.safetensors", build_model("edsr", n_feats=8, n_resblocks=1, scale=2))
    got = _stdout_json(["convert", "--to", "basicsr", str(ckpt), str(tmp_path / "s.pth"), "--json", "-"], capsys)
    assert got["layout"] == "basicsr-edsr" and got["source"] == str(ckpt)  # type: ignore[index]
    back = _stdout_json(["convert", str(tmp_path / "s.pth"), str(tmp_path / "back.safetensors"), "--json", "-"],
                        capsys)
    assert back["arch"] == "edsr" and back["scales"] == [2] and back["params"] > 0  # type: ignore[index]
    pytest.importorskip("onnxruntime")
    out = _stdout_json(["export", str(ckpt), "--onnx", str(tmp_path / "s.onnx"), "--json", "-"], capsys)
    (job,) = out["exports"]  # type: ignore[index]
    assert job["format"] == "onnx" and job["checked"] and job["max_abs_diff"] <= job["tolerance"]
