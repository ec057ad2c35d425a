"""Published teachers end to end, as a user meets them: `srkd convert` -> `srkd eval`, export, and every method.

Each zoo checkpoint in ../shared/weights must convert with its layout detected from the keys and score the Set5
PSNR that the authors' own code gives on srkd's LR images (the catalogue's `set5_psnr.srkd`, from
shared/weights/MANIFEST.md) within 0.02 dB. The per-architecture files (tests/test_arch_*.py) check the networks
against the published weights directly; this file checks the user's path through the CLI.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED, shared_path
from test_zoo import shared_file

from srkd.checkpoint import load_model, zoo
from srkd.checkpoint.convert import read_official
from srkd.cli.main import main
from srkd.models import all_layouts, build_model

# One small instance per new architecture: the students of the method tests, and the ONNX check.
TINY = {
    "bsrn": {"num_feat": 16, "num_block": 3},
    "smfanet": {"dim": 16, "n_blocks": 3},
    "imdn": {"num_feat": 16, "num_block": 3, "reduction": 4},
    "rfdn": {"num_feat": 16, "num_block": 3},
    "carn_m": {"num_feat": 16, "num_block": 3, "scales": [2, 3, 4]},
    "pan": {"num_feat": 16, "num_up_feat": 8, "num_block": 3},
}
NEW = sorted(TINY)
TINY["edsr"] = {"n_feats": 8, "n_resblocks": 3}
PUBLISHED = [e for e in zoo.catalog().values() if e.arch != "vdsr"]  # VDSR: tests/test_eval_vdsr.py (slow)


@pytest.fixture(autouse=True)
def _private_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "root"))


@pytest.mark.shared
def test_every_shared_checkpoint_matches_exactly_one_layout() -> None:
    for entry in zoo.catalog().values():
        state = read_official(shared_file(entry))
        names = [lay.name for lay in all_layouts() if lay.matches(state)]
        assert names == ([entry.arch] if entry.arch != "vdsr" else ["pytorch-vdsr"]), (entry.name, names)


@pytest.mark.shared
@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e.name)
def test_convert_then_eval_reproduces_set5(entry, tmp_path, capsys) -> None:
    src, dst = shared_file(entry), tmp_path / f"{entry.name}.safetensors"
    args = ["convert", str(src), str(dst)]
    if entry.arch == "pan" and entry.scales != (4,):  # x2 and x3 PAN weights have the same shapes
        assert main(args) == 2
        assert "give it with --scale" in capsys.readouterr().err
        args += ["--scale", str(entry.scales[0])]
    assert main(args) == 0, capsys.readouterr().err
    assert f"({entry.arch} layout)" in capsys.readouterr().out
    set5 = shared_path("data", "benchmarks", "Set5", "HR")
    for scale, expected in entry.set5_srkd.items():
        out = tmp_path / f"x{scale}.json"
        code = main(["eval", "--model", str(dst), "--scale", str(scale), "--data", str(set5), "--json", str(out), "-q"])
        assert code == 0, capsys.readouterr().err
        psnr = next(iter(json.loads(out.read_text()).values()))["psnr_y"]
        assert abs(psnr - expected) <= 0.02, (entry.name, scale, psnr, expected)


@pytest.mark.shared
def test_rfdn_records_its_value_range_so_no_flag_is_needed(tmp_path, capsys) -> None:
    dst = tmp_path / "rfdn.safetensors"
    assert main(["convert", str(shared_file(zoo.get("rfdn-x4"))), str(dst)]) == 0
    model, meta = load_model(dst)
    assert meta["kwargs"]["img_range"] == 255.0 and model.img_range == 255.0


@pytest.mark.parametrize("arch", NEW)
def test_onnx_export_of_each_new_architecture_matches_pytorch(arch, tmp_path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from srkd.checkpoint import save_model

    torch.manual_seed(0)
    ckpt = save_model(tmp_path / f"{arch}.safetensors", build_model(arch, scale=4, **TINY[arch]))
    code = main(["export", str(ckpt), "--onnx", str(tmp_path / f"{arch}.onnx"), "--dynamic", "--input", "20x24"])
    assert code == 0, capsys.readouterr().err  # `srkd export` runs its own parity check (1e-4) and fails otherwise


def _train(tmp_path, capsys, *sets: str) -> None:
    train = SHARED / "data" / "train" / "T91"
    if not train.exists():
        pytest.skip(f"needs {train}")
    base = ["train", "configs/edsr-x4-kd-quick.yaml", "--out", str(tmp_path / "run"),
            "--set", f"data.train=[{train}]", "--set", "data.val=[]", "--set", "train.iterations=2",
            "--set", "data.batch_size=2", "--set", "data.lr_patch=16", "--set", "train.ckpt_every=2",
            "--set", "train.channels_last=false", "--set", "train.precision=fp32"]
    code = main(base + [a for s in sets for a in ("--set", s)])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "last.safetensors").is_file()


def _teacher(tmp_path, arch: str, scale: int = 4):
    from srkd.checkpoint import save_model

    torch.manual_seed(1)
    return save_model(tmp_path / f"teacher-{arch}.safetensors", build_model(arch, scale=scale, **TINY[arch]))


@pytest.mark.parametrize("method", ["kd", "dukd", "fakd"])
@pytest.mark.parametrize(("teacher", "student"), [("bsrn", "imdn"), ("smfanet", "edsr"), ("rfdn", "pan"),
                                                  ("carn_m", "bsrn"), ("pan", "smfanet"), ("imdn", "rfdn")])
def test_methods_run_for_published_architecture_pairs(teacher, student, method, tmp_path, capsys) -> None:
    ckpt = _teacher(tmp_path, teacher)
    kwargs = json.dumps({**TINY[student], **({"scales": [4]} if student == "carn_m" else {})})
    method_set = {"kd": "method={name: kd}", "fakd": "method={name: fakd}",
                  "dukd": "method={name: dukd, zoom_in: true, zoom_out: true, augment: true}"}[method]
    _train(tmp_path, capsys, f"teacher.checkpoint={ckpt}", f"teacher.arch={teacher}", f"student.arch={student}",
           f"student.kwargs={kwargs}", method_set)


def test_csd_refuses_an_architecture_it_cannot_slim_in_one_line(tmp_path, capsys) -> None:
    code = main(["train", "configs/edsr-x4-csd-quick.yaml", "--out", str(tmp_path / "run"),
                 "--set", "student.arch=bsrn", "--set", "student.kwargs={num_feat: 16, num_block: 2}",
                 "--set", "train.iterations=2", "--set", "method.init_from_teacher=false"])
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(errors) == 1 and "csd" in errors[0] and "'bsrn'" in errors[0], errors


@pytest.mark.parametrize(("teacher", "student"), [("carn_m", "edsr"), ("smfanet", "bsrn")])
def test_data_free_from_a_published_architecture(teacher, student, tmp_path, capsys) -> None:
    ckpt = _teacher(tmp_path, teacher, scale=2)
    kwargs = json.dumps(TINY[student])
    code = main(["train", "configs/datafree-edsr-quick.yaml", "--out", str(tmp_path / "run"),
                 "--set", f"teacher.checkpoint={ckpt}", "--set", f"teacher.arch={teacher}",
                 "--set", f"student.arch={student}", "--set", f"student.kwargs={kwargs}",
                 "--set", "method.progressive=false", "--set", "train.iterations=2", "--set", "data.val=[]",
                 "--set", "data.batch_size=2", "--set", "train.precision=fp32", "--set", "train.channels_last=false"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_progressive_growth_refuses_a_body_it_cannot_grow_in_one_line(tmp_path, capsys) -> None:
    ckpt = _teacher(tmp_path, "carn_m", scale=2)
    code = main(["train", "configs/datafree-edsr-quick.yaml", "--out", str(tmp_path / "run"),
                 "--set", f"teacher.checkpoint={ckpt}", "--set", "teacher.arch=carn_m",
                 "--set", "student.arch=bsrn", "--set", f"student.kwargs={json.dumps(TINY['bsrn'])}",
                 "--set", "train.iterations=4", "--set", "method.progressive.stages=[2, 2]", "--set", "data.val=[]"])
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert code == 2 and len(errors) == 1 and "method.progressive" in errors[0], errors
