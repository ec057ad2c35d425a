"""`srkd resize` and `srkd metrics`: outputs, pairing rules, size handling, BasicSR parity, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from reference import basicsr_reference

from srkd.cli.main import main
from srkd.cli.metrics import _owner
from srkd.data.images import read_image, write_image
from srkd.metrics import psnr_y, ssim_y
from srkd.ops.imresize import imresize


def _photo(channels: int = 3, height: int = 45, width: int = 58, seed: int = 0) -> torch.Tensor:
    """A smooth random uint8 image (upsampled noise), so bicubic errors look like a photo's, not like noise."""
    g = torch.Generator().manual_seed(seed)
    return (
        imresize(torch.rand(channels, height // 4 + 2, width // 4 + 2, generator=g), size=(height, width))
        .mul(255)
        .clamp(0, 255)
        .round()
        .to(torch.uint8)
    )


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---------------------------------------------------------------- resize


def test_resize_writes_matlab_bicubic(tmp_path, capsys):
    src = tmp_path / "in.png"
    img = _photo()
    write_image(src, img)
    assert main(["resize", str(src), str(tmp_path / "down.png"), "--scale", "1/3"]) == 0
    down = read_image(tmp_path / "down.png")
    assert down.shape == (3, 15, 20) and torch.equal(down, imresize(img, scale=1 / 3))
    assert main(["resize", str(tmp_path / "down.png"), str(tmp_path / "up.bmp"), "--scale", "4"]) == 0
    assert torch.equal(read_image(tmp_path / "up.bmp"), imresize(down, scale=4))
    assert "down.png (20x15)" in capsys.readouterr().out


def test_resize_keeps_grayscale_and_handles_folders(tmp_path):
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "g.png", _photo(channels=1))
    write_image(tmp_path / "in" / "c.png", _photo(seed=1))
    assert main(["resize", str(tmp_path / "in"), str(tmp_path / "out"), "--scale", "0.5"]) == 0
    gray = read_image(tmp_path / "out" / "g.png", mode="unchanged")
    assert gray.shape == (1, 23, 29)
    assert torch.equal(gray, imresize(read_image(tmp_path / "in" / "g.png", mode="unchanged"), scale=0.5))
    assert read_image(tmp_path / "out" / "c.png", mode="unchanged").shape == (3, 23, 29)


def test_resize_parity_with_basicsr_on_a_real_image(tmp_path):
    ref = basicsr_reference()
    src = shared_path("data", "benchmarks", "Set5", "HR", "bird.png")
    assert main(["resize", str(src), str(tmp_path / "lr.png"), "--scale", "0.25"]) == 0
    lr = read_image(tmp_path / "lr.png")
    hwc = read_image(src).permute(1, 2, 0).numpy().astype(np.float32) / 255
    theirs = (
        np.clip(np.floor(ref.imresize(hwc, 0.25) * 255 + 0.5), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    )
    diff = np.abs(lr.numpy().astype(int) - theirs.astype(int))
    assert (diff == 0).mean() >= 0.999 and diff.max() <= 1


def test_resize_bad_input(tmp_path, capsys):
    good = tmp_path / "a.png"
    write_image(good, _photo())
    truncated = tmp_path / "t.png"
    truncated.write_bytes(good.read_bytes()[:200])
    cases = [
        ([str(tmp_path / "missing.png"), str(tmp_path / "o.png"), "--scale", "2"], "no such file"),
        ([str(truncated), str(tmp_path / "o.png"), "--scale", "2"], "t.png"),
        ([str(good), str(tmp_path / "o.png"), "--scale", "zero"], "--scale"),
        ([str(good), str(tmp_path / "o.png"), "--scale", "-2"], "positive"),
        ([str(good), str(good), "--scale", "2"], "overwrite"),
        ([str(good), str(tmp_path / "o.xyz"), "--scale", "2"], "unknown image format"),
    ]
    for argv, needle in cases:
        assert main(["resize", *argv]) == 2
        assert needle in _error_line(capsys)


# ---------------------------------------------------------------- metrics


def test_owner_rule():
    hr = ["baby", "baby_2", "bird"]
    for name in ("baby", "babyx2", "baby_x2", "baby_SR", "baby-EDSR_x4", "babyX4", "baby.x2"):
        assert _owner(name, hr) == "baby", name
    assert _owner("baby_2_SR", hr) == "baby_2" and _owner("baby_2", hr) == "baby_2"
    assert _owner("babyface", hr) is None and _owner("bir", hr) is None and _owner("babyx", hr) is None


def _sets(tmp_path: Path, names: dict[str, str], scale: int = 2) -> tuple[Path, Path, dict[str, tuple]]:
    """HR folder and SR folder with SR = bicubic(bicubic(HR)); names maps HR stem -> SR file name."""
    hr_dir, sr_dir = tmp_path / "hr", tmp_path / "sr"
    pairs = {}
    for i, (stem, sr_name) in enumerate(names.items()):
        hr = _photo(height=40 + 2 * i, width=36, seed=i)
        sr = imresize(imresize(hr, scale=1 / scale), scale=scale)
        write_image(hr_dir / f"{stem}.png", hr)
        write_image(sr_dir / sr_name, sr)
        pairs[stem] = (sr, hr)
    return hr_dir, sr_dir, pairs


def test_metrics_folders_table_and_json(tmp_path, capsys):
    hr_dir, sr_dir, pairs = _sets(tmp_path, {"baby": "babyx2.png", "bird": "bird_SR.png", "head": "head.png"})
    out = tmp_path / "m.json"
    assert (
        main(["metrics", "--hr", str(hr_dir), "--sr", str(sr_dir), "--scale", "2", "--json", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "bird" in printed and "mean of 3" in printed
    data = json.loads(out.read_text())
    assert [im["name"] for im in data["images"]] == ["baby", "bird", "head"]
    for im in data["images"]:
        sr, hr = pairs[im["name"]]
        assert im["psnr_y"] == pytest.approx(psnr_y(sr, hr, 2).item(), abs=1e-12)
        assert im["ssim_y"] == pytest.approx(ssim_y(sr, hr, 2).item(), abs=1e-12)
    assert data["mean"]["psnr_y"] == pytest.approx(np.mean([im["psnr_y"] for im in data["images"]]))
    assert data["mean"]["ssim_y"] == pytest.approx(np.mean([im["ssim_y"] for im in data["images"]]))
    # a single SR file against the HR folder, and two single files whatever their names
    assert main(["metrics", "--hr", str(hr_dir), "--sr", str(sr_dir / "bird_SR.png"), "--scale", "2"]) == 0
    assert "mean of 1" in capsys.readouterr().out
    assert (
        main(
            ["metrics", "--hr", str(hr_dir / "head.png"), "--sr", str(sr_dir / "babyx2.png"), "--scale", "2"]
        )
        == 2
    )
    assert "size mismatch" in _error_line(capsys)


def test_metrics_identical_images_give_null_psnr_in_json(tmp_path):
    img = tmp_path / "a.png"
    write_image(img, _photo())
    out = tmp_path / "m.json"
    assert main(["metrics", "--hr", str(img), "--sr", str(img), "--scale", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())  # strict JSON: no Infinity
    assert data["images"][0]["psnr_y"] is None and data["mean"]["psnr_y"] is None
    assert data["images"][0]["ssim_y"] == pytest.approx(1.0)


def test_metrics_crops_uncropped_hr_and_rejects_other_mismatches(tmp_path, capsys):
    hr = _photo(height=43, width=50)  # not multiples of 4
    sr = imresize(imresize(hr[:, :40, :48], scale=0.25), scale=4)
    write_image(tmp_path / "hr.png", hr)
    write_image(tmp_path / "sr.png", sr)
    out = tmp_path / "m.json"
    argv = ["metrics", "--hr", str(tmp_path / "hr.png"), "--sr", str(tmp_path / "sr.png"), "--json", str(out)]
    assert main([*argv, "--scale", "4"]) == 0
    assert json.loads(out.read_text())["images"][0]["psnr_y"] == pytest.approx(
        psnr_y(sr, hr[:, :40, :48], 4).item(), abs=1e-12
    )
    assert main([*argv, "--scale", "2"]) == 2  # 3 extra rows is more than the scale allows
    line = _error_line(capsys)
    assert "hr.png is 50x43" in line and "sr.png is 48x40" in line


def test_metrics_unpaired_and_bad_files(tmp_path, capsys):
    hr_dir, sr_dir, _ = _sets(tmp_path, {"a": "ax2.png", "b": "b_x2.png"})
    (sr_dir / "b_x2.png").rename(sr_dir / "zzz.png")
    assert main(["metrics", "--hr", str(hr_dir), "--sr", str(sr_dir), "--scale", "2"]) == 2
    assert "no SR image for 1 HR image(s): b.png" in _error_line(capsys)
    (sr_dir / "zzz.png").rename(sr_dir / "b.png")
    write_image(sr_dir / "other.png", _photo())  # matches nothing: skipped with a warning
    assert main(["metrics", "--hr", str(hr_dir), "--sr", str(sr_dir), "--scale", "2"]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped 1 SR file(s)" in captured.err and "other.png" in captured.err
    write_image(sr_dir / "a_SR.png", _photo())  # a now has two candidates
    assert main(["metrics", "--hr", str(hr_dir), "--sr", str(sr_dir), "--scale", "2"]) == 2
    assert "several SR files match" in _error_line(capsys)
    (sr_dir / "a_SR.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (sr_dir / "ax2.png").unlink()
    (sr_dir / "other.png").unlink()
    assert main(["metrics", "--hr", str(hr_dir), "--sr", str(sr_dir), "--scale", "2"]) == 2
    assert "a_SR.png" in _error_line(capsys)
    assert main(["metrics", "--hr", str(tmp_path / "nope"), "--sr", str(sr_dir), "--scale", "2"]) == 2
    assert "no such file" in _error_line(capsys)


def test_metrics_cli_parity_with_basicsr_on_grayscale_bridge(tmp_path):
    """Set14 bridge.png (8-bit gray) against its x3 bicubic: default = replicated to RGB (cv2's colour read),
    --gray own = its own values (2-D arrays)."""
    ref = basicsr_reference()
    src = shared_path("data", "benchmarks", "Set14", "HR", "bridge.png")
    gray = read_image(src, mode="unchanged")
    sr = imresize(imresize(gray[:, :510, :510], scale=1 / 3), scale=3)
    write_image(tmp_path / "bridge_x3.png", sr)
    for mode, hr_arr, sr_arr in (
        (
            "rgb",
            np.repeat(gray.numpy()[0, :510, :510, None], 3, 2),
            np.repeat(sr.numpy()[0, :, :, None], 3, 2),
        ),
        ("own", gray.numpy()[0, :510, :510], sr.numpy()[0]),
    ):
        out = tmp_path / f"{mode}.json"
        argv = ["metrics", "--hr", str(src), "--sr", str(tmp_path / "bridge_x3.png"), "--scale", "3"]
        assert main([*argv, "--gray", mode, "--json", str(out)]) == 0  # HR 512 -> cropped to 510
        got = json.loads(out.read_text())["images"][0]
        assert abs(got["psnr_y"] - ref.calculate_psnr(sr_arr, hr_arr, 3, test_y_channel=True)) < 1e-4
        assert abs(got["ssim_y"] - ref.calculate_ssim(sr_arr, hr_arr, 3, test_y_channel=True)) < 1e-5
