"""`srkd train`: each user mistake stops with one `error:` line (exit 2), before anything is written or lost."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_engine import cfg_dict, fake_methods  # noqa: F401 (fixture: registers the test-only methods)

from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.engine import state as ckpt
from srkd.models import build_model


def write(tmp: Path, d: dict) -> Path:
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def teacher_file(tmp: Path, arch: str = "edsr", **kwargs) -> str:
    torch.manual_seed(0)
    path = tmp / f"teacher-{arch}.safetensors"
    save_model(path, build_model(arch, **kwargs))
    return str(path)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["train", *argv])
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_train_succeeds_and_prints_the_run_folder(tmp_path: Path, capsys) -> None:
    d = cfg_dict(
        tmp_path, "kd", teacher={"checkpoint": teacher_file(tmp_path, scale=2, n_feats=8, n_resblocks=1)}
    )
    code = main(
        ["train", str(write(tmp_path, d)), "--set", "train.iterations=2", "--out", str(tmp_path / "o")]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"run folder: {tmp_path / 'o'}" in out.out
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "o")] == [2]
    assert yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())["train"]["iterations"] == 2


def test_datafree_is_an_alias_of_train(tmp_path: Path, capsys) -> None:
    d = cfg_dict(tmp_path, "scratch", train={"iterations": 1})
    assert main(["datafree", str(write(tmp_path, d))]) == 0
    assert ckpt.list_checkpoints(tmp_path / "run")


def test_unknown_config_key(tmp_path: Path, capsys) -> None:
    d = cfg_dict(tmp_path, "scratch")
    d["train"]["lrr"] = 1
    code, err = run_cli(capsys, str(write(tmp_path, d)))
    line = one_error_line(err)
    assert code == 2 and "unknown key 'train.lrr'" in line and "allowed: channels_last" in line
    code, err = run_cli(
        capsys, str(write(tmp_path, cfg_dict(tmp_path, "scratch"))), "--set", "method.pix_weight=2"
    )
    assert code == 2 and "method 'scratch': unknown key 'pix_weight' (allowed: name, progressive)" in one_error_line(err)


def test_teacher_student_scale_mismatch(tmp_path: Path, capsys) -> None:
    teacher = teacher_file(tmp_path, scale=4, n_feats=8, n_resblocks=1)
    d = cfg_dict(tmp_path, "kd", teacher={"checkpoint": teacher})
    code, err = run_cli(capsys, str(write(tmp_path, d)))
    assert code == 2
    assert (
        one_error_line(err)
        == f"error: teacher.checkpoint: {teacher} is a x4 model, but the run's scale is x2"
    )
    assert not (tmp_path / "run").exists()  # nothing was written


def test_teacher_student_colour_mismatch(tmp_path: Path, capsys) -> None:
    teacher = teacher_file(tmp_path, "vdsr", scale=2, n_feats=4, n_layers=3)
    d = cfg_dict(tmp_path, "kd", teacher={"checkpoint": teacher})
    code, err = run_cli(capsys, str(write(tmp_path, d)))
    assert code == 2 and "the teacher works on Y images but the student on RGB" in one_error_line(err)


def test_missing_dataset(tmp_path: Path, capsys) -> None:
    d = cfg_dict(tmp_path, "scratch", data={"train": [str(tmp_path / "nope")]})
    code, err = run_cli(capsys, str(write(tmp_path, d)))
    assert code == 2 and one_error_line(err) == f"error: {tmp_path / 'nope'}: no such folder"
    d = cfg_dict(tmp_path, "scratch", data={"val": ["NoSuchBenchmark"]})
    code, err = run_cli(capsys, str(write(tmp_path, d)))
    assert code == 2 and "unknown dataset 'NoSuchBenchmark'" in one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_with_the_iteration_and_keeps_checkpoints(tmp_path: Path, capsys) -> None:
    d = cfg_dict(tmp_path, {"name": "noisy", "nan_at": [3]})
    code, err = run_cli(capsys, str(write(tmp_path, d)))
    line = one_error_line(err)
    assert code == 2 and line.startswith("error: non-finite loss at iteration 3 (l1=nan)")
    assert "iter_00000002.pt" in line
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "run", 2))["step"] == 2


def test_bad_resume_path_and_fresh_start_over_a_run(tmp_path: Path, capsys) -> None:
    path = str(write(tmp_path, cfg_dict(tmp_path, "scratch", train={"iterations": 2})))
    code, err = run_cli(capsys, path, "--resume", str(tmp_path / "missing.pt"))
    assert code == 2 and "missing.pt: no such training checkpoint" in one_error_line(err)
    assert run_cli(capsys, path)[0] == 0
    code, err = run_cli(capsys, path, "--resume", "none")
    assert code == 2 and "already holds training checkpoints" in one_error_line(err)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]


def test_teacher_kwargs_must_match_the_checkpoint(tmp_path: Path, capsys) -> None:
    teacher = teacher_file(tmp_path, scale=2, n_feats=8, n_resblocks=1)
    d = cfg_dict(tmp_path, "kd", teacher={"checkpoint": teacher, "arch": "edsr", "kwargs": {"n_feats": 64}})
    code, err = run_cli(capsys, str(write(tmp_path, d)))
    assert (
        code == 2
        and one_error_line(err) == f"error: teacher.kwargs.n_feats is 64 but {teacher} was built with 8"
    )


def test_srkd_warnings_print_as_one_user_line_and_others_keep_their_source() -> None:
    import os

    import srkd.engine.trainer as trainer_module
    from srkd.cli.main import format_warning

    ours = format_warning(UserWarning("skipped 1 image(s)"), UserWarning, trainer_module.__file__, 166, "x = 1")
    assert ours == "warning: skipped 1 image(s)\n"
    elsewhere = os.path.join(os.sep, "site-packages", "lib.py")
    assert "lib.py:3: UserWarning: lib says" in format_warning(UserWarning("lib says"), UserWarning, elsewhere, 3)
    deprecation = format_warning(DeprecationWarning("old"), DeprecationWarning, trainer_module.__file__, 5)
    assert "trainer.py:5: DeprecationWarning: old" in deprecation
