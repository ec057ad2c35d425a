"""``srkd.distill``: nn.Modules or names in, the engine of ``srkd train`` underneath, the trained student out."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

import srkd
from srkd.checkpoint.io import save_model
from srkd.data.images import write_image
from srkd.errors import ConfigError
from srkd.models import build_model


class Tiny(nn.Module):
    """A network srkd did not build: conv, ReLU, conv to s^2 x 3 channels, pixel shuffle; no srkd attributes."""

    def __init__(self, width: int, scale: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=gen), size=(40, 48),
                                                     mode="bilinear", align_corners=False)[0]
            write_image(tmp_path / split / f"{i}.png", (smooth * 255).round().to(torch.uint8))
    return tmp_path


def common(images: Path) -> dict:
    return dict(train=images / "train", val=images / "val", batch_size=2, lr_patch=8, tensorboard=False,
                data_root=str(images / "data_root"))


def test_modules_in_trained_module_out(images: Path) -> None:
    torch.manual_seed(0)
    teacher, student = Tiny(16), Tiny(4)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = srkd.distill(teacher, student, "kd", scale=2, iterations=5, out=images / "run", **common(images))
    assert result.student is student and not student.training
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert set(result.metrics) == {"val"} and result.metrics["val"]["psnr_y"] > 0
    cfg = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert cfg["student"]["arch"] == "module:test_api.Tiny" and cfg["train"]["iterations"] == 5
    assert cfg["data"]["batch_size"] == 2 and cfg["method"]["name"] == "kd"
    from safetensors.torch import load_file

    saved = load_file(str(result.run_dir / "last.safetensors"))
    assert saved.keys() == student.state_dict().keys()  # the module's own key names
    for net in (teacher, student):  # the attributes lent for the run are gone, the teacher is not left frozen
        assert not hasattr(net, "scale") and not hasattr(net, "spec")
    assert all(p.requires_grad for p in teacher.parameters()) and teacher.training


def test_names_and_checkpoints_with_dukd(images: Path) -> None:
    torch.manual_seed(0)
    teacher = save_model(images / "teacher.safetensors", build_model("edsr", scale=2, n_feats=8, n_resblocks=1))
    result = srkd.distill(str(teacher), "edsr:n_feats=4,n_resblocks=1", "dukd", iterations=3,
                          out=images / "run", pix_weight=2.0, **common(images))
    assert result.student.spec.arch == "edsr" and result.student.scale == 2  # scale read from the teacher file
    assert result.student.spec.kwargs == {"n_feats": 4, "n_resblocks": 1, "scale": 2}
    cfg = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert cfg["teacher"]["checkpoint"] == str(teacher) and cfg["method"]["pix_weight"] == 2.0


def test_datafree_module_student_trains_without_growth(images: Path) -> None:
    torch.manual_seed(0)
    student = Tiny(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random teacher's warning
        result = srkd.distill("edsr:n_feats=8,n_resblocks=1,scale=2", student, "datafree", iterations=2,
                              out=images / "run", batch_size=2, image_size=12, tensorboard=False,
                              data_root=str(images / "data_root"))
    assert result.student is student
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["method"]["progressive"] is None


def test_mistakes_are_one_line_errors(images: Path) -> None:
    with pytest.raises(ConfigError, match="give scale="):
        srkd.distill(Tiny(8), Tiny(4), train=images / "train")
    with pytest.raises(ConfigError, match="the student upscales x2 but the run's scale is x3"):
        srkd.distill("edsr:scale=3,n_feats=8,n_resblocks=1", "edsr:scale=2,n_feats=4,n_resblocks=1",
                     train=images / "train")
    with pytest.raises(ConfigError, match="give train="):
        srkd.distill(Tiny(8), Tiny(4), scale=2)
    with pytest.raises(ConfigError, match="ambiguous.*optim__name"):
        srkd.distill(Tiny(8), Tiny(4), scale=2, train=images / "train", name="x")
    with pytest.raises(ConfigError, match="unknown setting 'bogus'"):
        srkd.distill(Tiny(8), Tiny(4), scale=2, train=images / "train", bogus=1)
    with pytest.raises(ConfigError, match="unknown method"):
        srkd.distill(Tiny(8), Tiny(4), "nope", scale=2)
    with pytest.raises(ConfigError, match="needs a teacher"):
        srkd.distill(None, Tiny(4), "kd", scale=2, train=images / "train")
    with pytest.raises(ConfigError, match="neither a checkpoint"):
        srkd.distill("no-such-arch", Tiny(4), scale=2, train=images / "train")
    with pytest.raises(ConfigError, match="train.iterations"):
        srkd.distill(Tiny(8), Tiny(4), scale=2, train=images / "train", iterations=0)


def test_import_srkd_stays_light() -> None:
    code = "import sys, srkd; assert 'torch' not in sys.modules, 'torch imported'; assert 'distill' in dir(srkd)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_rerun_with_the_same_out_continues_that_run(images: Path) -> None:
    torch.manual_seed(0)
    teacher, first = Tiny(16), Tiny(4)
    srkd.distill(teacher, first, "kd", scale=2, iterations=3, out=images / "run", **common(images))
    again = srkd.distill(teacher, Tiny(4), "kd", scale=2, iterations=3, out=images / "run", **common(images))
    for key, value in first.state_dict().items():  # a finished run hands back its student, untrained further
        assert torch.equal(again.student.state_dict()[key], value)


@pytest.mark.slow
def test_the_example_script_runs(tmp_path: Path) -> None:
    """examples/distill_module.py as a user runs it (about 2 minutes on a 2-core CPU)."""
    script = Path(__file__).resolve().parents[1] / "examples" / "distill_module.py"
    env = {**os.environ, "SRKD_DATA": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=True)
    assert "Y PSNR on samples-val: teacher" in done.stdout
    assert (tmp_path / "runs" / "example-kd" / "last.safetensors").is_file()


@pytest.mark.parametrize("first", ["import srkd.distill.kd, srkd", "import srkd; srkd.distill; import srkd.distill.kd"])
def test_srkd_distill_is_callable_whatever_was_imported_first(first: str) -> None:
    """`srkd.distill` is also the methods' package: importing a method module first (as the engine, the CLI and
    most test files do) binds the name to the package, which must still be the API's entry point."""
    code = f"{first}\nimport srkd.api\nassert callable(srkd.distill) and srkd.distill.get_method('kd')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
