"""``srkd upscale``: files and folders in, one error line per bad file, finished outputs kept, exit 2 at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.data.images import read_image, write_image
from srkd.evaluation.upscale import upscale_image
from srkd.models import build_model


@pytest.fixture
def ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_model(
        tmp_path / "edsr_x2.safetensors", build_model("edsr", scale=2, n_feats=8, n_resblocks=1)
    )


def photo(h: int, w: int) -> torch.Tensor:
    from skimage.data import coffee

    return torch.from_numpy(np.ascontiguousarray(coffee()[100 : 100 + h, 200 : 200 + w].transpose(2, 0, 1)))


def test_folder_with_a_bad_file_keeps_the_good_ones(tmp_path, ckpt, capsys):
    src = tmp_path / "in"
    write_image(src / "a.png", photo(20, 30))
    write_image(src / "b.jpg", photo(17, 9))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = main(["upscale", "--model", str(ckpt), str(src), str(tmp_path / "out"), "--tile", "8", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0] and "Traceback" not in err
    assert read_image(tmp_path / "out" / "a.png").shape == (3, 40, 60)
    assert read_image(tmp_path / "out" / "b.png").shape == (3, 34, 18)
    assert not (tmp_path / "out" / "broken.png").exists()


def test_single_file_to_file_matches_the_api(tmp_path, ckpt, capsys):
    from srkd.checkpoint.io import load_model

    write_image(tmp_path / "x.png", photo(24, 26))
    code = main(["upscale", "--model", str(ckpt), str(tmp_path / "x.png"), str(tmp_path / "x_sr.png"), "-q"])
    assert code == 0, capsys.readouterr().err
    model, _ = load_model(ckpt)
    expected = upscale_image(model, read_image(tmp_path / "x.png"), out_dtype=torch.uint8)
    assert torch.equal(read_image(tmp_path / "x_sr.png"), expected)


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing-input", "no such file"),
        ("missing-model", "no such file"),
        ("wrong-scale", "x3"),
        ("self", "overwrite"),
        ("file-without-image-suffix", "needs an image suffix such as .png"),
    ],
)
def test_errors_are_one_line(tmp_path, ckpt, capsys, case, needle):
    write_image(tmp_path / "x.png", photo(10, 10))
    args = ["upscale", "--model", str(ckpt), str(tmp_path / "x.png"), str(tmp_path / "out"), "-q"]
    if case == "missing-input":
        args[3] = str(tmp_path / "nope.png")
    elif case == "missing-model":
        args[2] = str(tmp_path / "nope.safetensors")
    elif case == "wrong-scale":
        args += ["--scale", "3"]
    elif case == "self":
        args[4] = str(tmp_path)
    elif case == "file-without-image-suffix":  # one input, an existing non-image file as OUT
        (tmp_path / "student.onnx").write_bytes(b"x")
        args[4] = str(tmp_path / "student.onnx")
    code = main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
