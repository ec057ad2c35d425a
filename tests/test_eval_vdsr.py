"""The pretrained VDSR teachers through ``srkd convert`` + ``srkd eval`` (acceptance 2). Slow on 2 CPU cores.

Thresholds are the acceptance's. With the default Y input (luma of the float bicubic upscale, the VDSR authors'
protocol) this pipeline measures pytorch-vdsr Set5 37.58 / 33.75 / 31.43 and MatConvNet 37.53 / 33.66 / 31.35 (its published figures).
``--y-input rounded`` (an 8-bit pipeline) reproduces the reference numbers of shared/notes/calibration.md
(pytorch-vdsr 37.55 / 33.72 / 31.35) exactly, but leaves MatConvNet x4 at 31.248, just outside its 0.1 dB band.
"""

from __future__ import annotations

import json

import pytest

from srkd.cli.main import main

PYTORCH_VDSR_MIN = {2: 37.50, 3: 33.67, 4: 31.30}
MATCONVNET_STATED = {2: 37.53, 3: 33.66, 4: 31.35}


@pytest.fixture(autouse=True)
def _private_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "data-root"))


def converted(src, tmp_path, capsys):
    dst = tmp_path / "vdsr.safetensors"
    assert main(["convert", str(src), str(dst)]) == 0
    capsys.readouterr()
    return dst


def eval_json(ckpt, data, scale, tmp_path, capsys, *extra: str) -> dict:
    out = tmp_path / f"x{scale}.json"
    args = [
        "eval",
        "--model",
        str(ckpt),
        "--scale",
        str(scale),
        "--data",
        str(data),
        "--json",
        str(out),
        "-q",
    ]
    code = main([*args, *extra])
    assert code == 0, capsys.readouterr().err
    return json.loads(out.read_text())


@pytest.mark.shared
@pytest.mark.slow
def test_pytorch_vdsr_set5(vdsr_pth, set5_hr, tmp_path, capsys):
    ckpt = converted(vdsr_pth, tmp_path, capsys)
    for scale, floor in PYTORCH_VDSR_MIN.items():
        psnr = eval_json(ckpt, set5_hr, scale, tmp_path, capsys)["Set5"]["psnr_y"]
        assert floor <= psnr < floor + 0.2, (scale, psnr)


@pytest.mark.shared
@pytest.mark.slow
def test_rounded_input_reproduces_the_8bit_reference(vdsr_pth, set5_hr, tmp_path, capsys):
    ckpt = converted(vdsr_pth, tmp_path, capsys)
    psnr = eval_json(ckpt, set5_hr, 4, tmp_path, capsys, "--y-input", "rounded")["Set5"]["psnr_y"]
    assert abs(psnr - 31.35) <= 0.005, psnr  # calibration.md: 37.55 / 33.72 / 31.35


@pytest.mark.shared
@pytest.mark.slow
def test_matconvnet_vdsr_set5(vdsr_mat, set5_hr, tmp_path, capsys):
    ckpt = converted(vdsr_mat, tmp_path, capsys)
    for scale, stated in MATCONVNET_STATED.items():
        psnr = eval_json(ckpt, set5_hr, scale, tmp_path, capsys)["Set5"]["psnr_y"]
        assert abs(psnr - stated) <= 0.1, (scale, psnr)


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("name,floor", [("Set14", 32.95), ("B100", 31.84)])
def test_pytorch_vdsr_x2_set14_b100(vdsr_pth, tmp_path, capsys, name, floor):
    from conftest import shared_path

    hr = shared_path("data", "benchmarks", name, "HR")
    ckpt = converted(vdsr_pth, tmp_path, capsys)
    psnr = eval_json(ckpt, hr, 2, tmp_path, capsys)[name]["psnr_y"]
    assert floor <= psnr < floor + 0.2, psnr
