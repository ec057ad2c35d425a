"""``srkd eval`` / ``evaluate_model``: the bicubic acceptance numbers, the JSON contract, the protocol, the errors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from srkd.cli.main import main
from srkd.data.images import read_image, write_image
from srkd.errors import CheckpointError
from srkd.evaluation import evaluate_model
from srkd.models import build_model

# BasicSR 1.4.2 metrics on MATLAB-bicubic LR (shared/notes/calibration.md); acceptance 1 allows +-0.01 dB.
BICUBIC_SET5 = {2: 33.68, 3: 30.40, 4: 28.43}


@pytest.fixture(autouse=True)
def _private_data_root(tmp_path, monkeypatch):
    """Keep the LR cache out of the user's ~/.cache."""
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "data-root"))


def make_set(folder: Path, sizes=((60, 80), (61, 47), (60, 80))) -> Path:
    """A small HR set cut from scikit-image's bundled photos (real texture, offline)."""
    from skimage.data import astronaut, chelsea

    photos = [astronaut(), chelsea()]
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        img = photos[i % 2][40 + 7 * i : 40 + 7 * i + h, 90 : 90 + w]
        write_image(folder / f"img{i}.png", torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
    return folder


def tiny(arch: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "vdsr":
        return build_model("vdsr", scale=scale, n_feats=8, n_layers=4)
    return build_model("edsr", scale=scale, n_feats=8, n_resblocks=1)


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_set5_acceptance(set5_hr, tmp_path, capsys, scale):
    out = tmp_path / "res.json"
    code, stdout, _ = run_cli(
        [
            "eval",
            "--model",
            "bicubic",
            "--data",
            str(set5_hr),
            "--scale",
            str(scale),
            "--json",
            str(out),
            "-q",
        ],
        capsys,
    )
    assert code == 0
    res = json.loads(out.read_text())
    assert set(res) == {"Set5"} and set(res["Set5"]) == {"psnr_y", "ssim_y", "n"}
    assert res["Set5"]["n"] == 5
    assert abs(res["Set5"]["psnr_y"] - BICUBIC_SET5[scale]) <= 0.01, res
    assert 0.7 < res["Set5"]["ssim_y"] < 0.95
    assert "Set5" in stdout and f"{res['Set5']['psnr_y']:.2f}" in stdout


def test_saved_images_give_the_reported_numbers(tmp_path):
    """The protocol: metrics are computed on the uint8 image that is saved, HR cropped to a multiple of s."""
    from srkd.data.degrade import make_lr
    from srkd.metrics import psnr_y, ssim_y

    folder = make_set(tmp_path / "mine" / "HR")
    save = tmp_path / "sr"
    res = evaluate_model("bicubic", [str(folder)], 3, save_dir=save, progress=False)
    assert list(res) == ["mine"]
    entry = res["mine"]
    assert entry["n"] == 3 and [im["name"] for im in entry["images"]] == ["img0", "img1", "img2"]
    for im in entry["images"]:
        hr, lr = make_lr(read_image(folder / f"{im['name']}.png"), 3)
        sr = read_image(save / "mine" / f"{im['name']}.png")
        assert sr.shape == hr.shape == (3, lr.shape[1] * 3, lr.shape[2] * 3)
        assert float(psnr_y(sr, hr, crop_border=3)) == pytest.approx(im["psnr_y"], abs=1e-9)
        assert float(ssim_y(sr, hr, crop_border=3)) == pytest.approx(im["ssim_y"], abs=1e-9)
    assert entry["psnr_y"] == pytest.approx(np.mean([im["psnr_y"] for im in entry["images"]]))
    # bicubic is equivariant to flips/transposes: the x8 self-ensemble changes nothing measurable
    ens = evaluate_model("bicubic", [str(folder)], 3, self_ensemble=True, progress=False)
    assert ens["mine"]["psnr_y"] == pytest.approx(entry["psnr_y"], abs=2e-3)


def test_live_model_tiled_and_state_restored(tmp_path):
    folder = make_set(tmp_path / "val")
    model = tiny("edsr", 2).train()
    whole = evaluate_model(model, [str(folder)], 2, device=None, tile=0, progress=False)
    tiled = evaluate_model(model, [str(folder)], 2, device=None, tile=12, progress=False)
    assert model.training  # the engine validates its live student with this
    for a, b in zip(whole["val"]["images"], tiled["val"]["images"]):
        assert a["psnr_y"] == pytest.approx(b["psnr_y"], abs=0.01)
    with pytest.raises(CheckpointError, match="upscales x2, but --scale 3"):
        evaluate_model(model, [str(folder)], 3, progress=False)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_kernels_says_it_is_emulated(tmp_path, monkeypatch, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    folder = make_set(tmp_path / "val", sizes=((24, 24),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate_model(tiny("edsr", 2), [str(folder)], 2, precision="bf16", progress=False)
    said = [str(w.message) for w in caught if "emulated" in str(w.message)]
    assert len(said) == (0 if native else 1) and (native or "evaluate in fp32" in said[0])


def test_y_model_runs_and_saves_rgb(tmp_path):
    folder = make_set(tmp_path / "val", sizes=((48, 40),))
    model = tiny("vdsr", 2)
    res = evaluate_model(
        model, [str(folder)], 4, save_dir=tmp_path / "sr", progress=False
    )  # VDSR serves any s
    assert res["val"]["n"] == 1 and 5 < res["val"]["psnr_y"] < 60
    assert read_image(tmp_path / "sr" / "val" / "img0.png").shape == (3, 48, 40)


def test_cli_json_keys_and_checkpoint(tmp_path, capsys):
    from srkd.checkpoint.io import save_model

    root = tmp_path / "root"
    make_set(root / "Set5" / "HR", sizes=((40, 40),))
    folder = make_set(tmp_path / "other" / "HR", sizes=((36, 44),))
    ckpt = save_model(tmp_path / "m.safetensors", tiny("edsr", 2))
    out = tmp_path / "r.json"
    code, stdout, stderr = run_cli(
        [
            "eval",
            "--model",
            str(ckpt),
            "--scale",
            "2",
            "--data",
            f"set5,{folder}",
            "--data-root",
            str(root),
            "--json",
            str(out),
            "-q",
        ],
        capsys,
    )
    assert code == 0, stderr
    res = json.loads(out.read_text())
    assert list(res) == ["set5", "other"] and res["set5"]["n"] == 1 and res["other"]["n"] == 1
    direct = evaluate_model(tiny("edsr", 2), [str(folder)], 2, progress=False)
    assert res["other"]["psnr_y"] == pytest.approx(direct["other"]["psnr_y"], abs=1e-6)


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing-folder", "no such folder"),
        ("unknown-name", "unknown dataset 'NoSuchSet'"),
        ("wrong-scale", "x4"),
        ("too-small", "smaller than the scale"),
        ("not-a-checkpoint", "not a safetensors file"),
        ("bad-precision", "invalid choice"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, case, needle):
    from srkd.checkpoint.io import save_model

    folder = make_set(tmp_path / "val", sizes=((30, 30),))
    args = ["eval", "--model", "bicubic", "--scale", "2", "--data", str(folder), "-q"]
    if case == "missing-folder":
        args[6] = str(tmp_path / "nope" / "HR")
    elif case == "unknown-name":
        args[6] = "NoSuchSet"
    elif case == "wrong-scale":
        args[2] = str(save_model(tmp_path / "x4.safetensors", tiny("edsr", 4)))
    elif case == "too-small":
        write_image(folder / "tiny.png", torch.zeros(3, 2, 2, dtype=torch.uint8))
        args[4] = "3"
    elif case == "not-a-checkpoint":
        (tmp_path / "junk.safetensors").write_bytes(b"\x80\x02junk")
        args[2] = str(tmp_path / "junk.safetensors")
    elif case == "bad-precision":
        args += ["--precision", "fp8"]
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2 and needle in capsys.readouterr().err
        return
    code, _, stderr = run_cli(args, capsys)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert "Traceback" not in stderr


def test_non_sr_model_is_refused(tmp_path):
    folder = make_set(tmp_path / "val", sizes=((20, 20),))
    with pytest.raises(CheckpointError, match="'generator' model is not a super-resolution network"):
        evaluate_model(build_model("generator", image_size=16), [str(folder)], 2, progress=False)


def test_auto_tiling_of_large_images_keeps_the_numbers(tmp_path, monkeypatch):
    """Above AUTO_TILE_PIXELS images are tiled (bounded memory); a Y model is still measured on its own luma."""
    import srkd.evaluation.evaluate as ev

    folder = make_set(tmp_path / "val", sizes=((60, 80), (60, 80), (30, 24)))
    model = tiny("vdsr", 2)
    whole = evaluate_model(model, [str(folder)], 2, tile=0, progress=False)
    monkeypatch.setattr(ev, "AUTO_TILE_PIXELS", 30 * 40 - 1)  # the two 30x40 LR images, not the 15x12 one
    monkeypatch.setattr(ev, "AUTO_TILE", 16)
    calls = []
    real = ev.tiled_super_resolve
    monkeypatch.setattr(ev, "tiled_super_resolve", lambda *a, **k: calls.append(k["tile"]) or real(*a, **k))
    auto = evaluate_model(model, [str(folder)], 2, progress=False)
    assert calls == [16, 16]
    for a, b in zip(whole["val"]["images"], auto["val"]["images"]):
        assert a["psnr_y"] == pytest.approx(b["psnr_y"], abs=0.01) and a["name"] == b["name"]
