"""A run folder's results are never lost (issue 35): no fresh start, fork or `--resume none` overwrites them
without `--overwrite`, and a kill during the final validation still ends with best.safetensors and its record.

Tiny runs from test_engine's helpers (EDSR 4f/1b x2, a few iterations), a second or two each.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_engine import make_cfg, make_images, write_cfg

from srkd.cli.main import main
from srkd.engine import state as ckpt
from srkd.engine.logging import read_log
from srkd.engine.trainer import train
from srkd.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:teacher has no checkpoint")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _finished(tmp: Path, **train_kw: int):
    cfg = make_cfg(tmp, "scratch", train={"iterations": 4, "ckpt_every": 2, "val_every": 2, **train_kw},
                   data={"val": [str(make_images(tmp / "val", n=1, size=24))]})
    train(cfg)
    return cfg


def test_a_finished_run_without_checkpoints_is_not_overwritten(tmp_path: Path, capsys) -> None:
    cfg = _finished(tmp_path)
    for _, p in ckpt.list_checkpoints(cfg.run_dir):
        p.unlink()
    before = _digest(cfg.run_dir)
    for resume in ("auto", None):
        with pytest.raises(ConfigError, match=r"holds the results of a run .*best.safetensors.*--overwrite"):
            train(cfg, resume=resume)
    assert _digest(cfg.run_dir) == before
    # the CLI: one line, status 2, naming the folder and the way out
    cfg_file = write_cfg(tmp_path, "scratch", train={"iterations": 2})
    capsys.readouterr()
    assert main(["train", str(cfg_file), "--out", str(cfg.run_dir)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert "Traceback" not in err and len(lines) == 1 and str(cfg.run_dir) in lines[0] and "--out" in lines[0]
    assert _digest(cfg.run_dir) == before
    # --overwrite is the explicit way: the folder then holds the new run only
    assert main(["train", str(cfg_file), "--out", str(cfg.run_dir), "--overwrite"]) == 0
    assert [r["step"] for r in read_log(cfg.run_dir / "log.jsonl") if r["type"] == "start"] == [0]


def test_resume_from_another_runs_checkpoint_into_a_result_folder_is_refused(tmp_path: Path) -> None:
    a = _finished(tmp_path / "a")
    b = _finished(tmp_path / "b")
    before = _digest(b.run_dir)
    foreign = ckpt.list_checkpoints(a.run_dir)[-1][1]
    with pytest.raises(ConfigError, match=f"{b.run_dir}.*continuing"):
        train(b, resume=str(foreign))
    assert _digest(b.run_dir) == before
    assert {p.name for p in (b.run_dir / "ckpt").iterdir()} == {"iter_00000002.pt", "iter_00000004.pt"}


def test_an_early_crash_restarts_in_its_own_folder(tmp_path: Path) -> None:
    """config.yaml and a start record but nothing learned: the same run may start again."""
    cfg = make_cfg(tmp_path, "scratch", train={"iterations": 2})
    train(cfg)
    for name in ("best.safetensors", "last.safetensors"):
        (cfg.run_dir / name).unlink(missing_ok=True)
    for _, p in ckpt.list_checkpoints(cfg.run_dir):
        p.unlink()
    log = cfg.run_dir / "log.jsonl"
    log.write_text(log.read_text().splitlines()[0] + "\n")  # the start record only
    train(cfg, resume="auto")
    assert (cfg.run_dir / "last.safetensors").exists()
    other = make_cfg(tmp_path, "scratch", seed=4, train={"iterations": 2})  # another config: its config.yaml stays
    (cfg.run_dir / "last.safetensors").unlink()
    for _, p in ckpt.list_checkpoints(cfg.run_dir):
        p.unlink()
    log.write_text(log.read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="config.yaml"):
        train(other, resume="auto")


def test_a_kill_during_the_final_validation_still_writes_best(tmp_path: Path, monkeypatch) -> None:
    straight = _finished(tmp_path / "straight")
    expect_val = [r for r in read_log(straight.run_dir / "log.jsonl") if r["type"] == "val"]
    cfg = make_cfg(tmp_path / "killed", "scratch", train={"iterations": 4, "ckpt_every": 2, "val_every": 2},
                   data={"val": [str(make_images(tmp_path / "killed" / "val", n=1, size=24))]})
    import srkd.engine.trainer as evaluate  # the engine's evaluate_model

    real = evaluate.evaluate_model
    calls = {"n": 0}

    def dies_at_the_final_validation(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # validation 1 is two passes (EMA and raw weights); the next one is killed
            raise SystemExit("killed")
        return real(*a, **k)

    monkeypatch.setattr(evaluate, "evaluate_model", dies_at_the_final_validation)
    with pytest.raises(SystemExit):
        train(cfg)
    monkeypatch.setattr(evaluate, "evaluate_model", real)
    train(cfg, resume="auto")
    got = [r for r in read_log(cfg.run_dir / "log.jsonl") if r["type"] == "val"]
    assert [(r["step"], r["psnr_y"]) for r in got] == [(r["step"], r["psnr_y"]) for r in expect_val]
    assert (cfg.run_dir / "best.safetensors").exists()
    a, b = load_file(cfg.run_dir / "best.safetensors"), load_file(straight.run_dir / "best.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_final_checkpoint_written_before_its_validation_is_validated_on_resume(tmp_path: Path) -> None:
    """Checkpoints of earlier srkd versions (or a stop signal) precede their validation: resume validates."""
    cfg = _finished(tmp_path)
    (cfg.run_dir / "best.safetensors").unlink()
    log = cfg.run_dir / "log.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines()
                           if not ('"val"' in line and '"step": 4' in line)))
    path = ckpt.list_checkpoints(cfg.run_dir)[-1][1]
    state = torch.load(path, weights_only=True)
    del state["validated"]
    state["best"] = {"psnr": state["best"]["psnr"] - 100, "step": 2}
    torch.save(state, path)
    train(cfg, resume="auto")
    assert (cfg.run_dir / "best.safetensors").exists()
    vals = [r["step"] for r in read_log(log) if r["type"] == "val"]
    assert vals == [2, 4]
    assert ckpt.load_checkpoint(path)["validated"] is True
