"""scikit-image and scipy are optional extras (``demo``, ``matconvnet``): what needs them says what to install, in
one line, when they are missing; nothing else imports them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from srkd.cli.main import main
from srkd.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def test_core_dependencies_leave_them_to_the_extras() -> None:
    text = (REPO / "pyproject.toml").read_text()
    core = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "scikit-image" not in core and "scipy" not in core
    assert 'demo = ["scikit-image' in text and 'matconvnet = ["scipy' in text
    assert '".[demo]"' in (REPO / "Makefile").read_text()  # `make demo` installs what the demo needs


def test_sample_photos_without_scikit_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from srkd.data import samples

    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(DataError, match=r"pip install 'srkd\[demo\]'"):
        samples.sample_paths("val")


def test_matconvnet_conversion_without_scipy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    mat = tmp_path / "VDSR_Official.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    assert main(["convert", str(mat), str(tmp_path / "vdsr.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: this needs scipy, an optional dependency of srkd that is not installed: "
                   "pip install 'srkd[matconvnet]' (or scipy)"], err


def test_importing_srkd_and_its_commands_loads_neither() -> None:
    code = ("import sys, srkd.cli.main, srkd.cli.train, srkd.cli.eval, srkd.cli.convert, srkd.data.samples, "
            "srkd.checkpoint.convert; print(sorted(m for m in ('scipy', 'skimage') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]
