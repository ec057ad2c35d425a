"""The training engine: a run end to end, bit-identical resume, faults (kill, disk full, NaN), progressive stages.

Runs are tiny (EDSR 4 features / 1 block, x2, LR patch 8, batch 2, a handful of iterations on generated images)
so that each takes a second or two on a loaded 2-core machine. Helpers here are also imported by the
subprocess runners (kill/resume, DDP) through ``runner_script``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml

from srkd.config_base import load_config, validate
from srkd.data.images import write_image
from srkd.distill import METHODS
from srkd.distill.base import Batch, MethodConfig
from srkd.distill.base import Method as MethodBase
from srkd.engine import state as ckpt
from srkd.engine.config import TrainConfig
from srkd.engine.logging import read_log
from srkd.engine.trainer import train
from srkd.errors import CheckpointError, ConfigError, TrainingError

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PY = sys.executable
pytestmark = pytest.mark.filterwarnings("ignore:teacher has no checkpoint")


# -- helpers (also used by subprocess runners) ------------------------------------------------------------
def make_images(folder: Path, n: int = 4, size: int = 40, seed: int = 0) -> Path:
    """Smooth random RGB images (blurred noise), so that the SR task is learnable and losses move."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        x = torch.rand(1, 3, size // 4, size // 4, generator=g)
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        write_image(folder / f"img{i}.png", x[0].clamp(0, 1))
    return folder


def cfg_dict(tmp: Path, method: Any = "kd", **sections: Any) -> dict[str, Any]:
    data = tmp / "train"
    if not data.exists():
        make_images(data)
    d: dict[str, Any] = {
        "name": "t",
        "seed": 3,
        "scale": 2,
        "out_dir": str(tmp / "run"),
        "student": {"arch": "edsr", "kwargs": {"n_feats": 4, "n_resblocks": 1}},
        "teacher": {"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}},
        "method": method if isinstance(method, dict) else {"name": method},
        "data": {"train": [str(data)], "lr_patch": 8, "batch_size": 2, "data_root": str(tmp / "data_root")},
        "optim": {"lr": 1e-3},
        "sched": {"milestones": [3, 6], "gamma": 0.5},
        "train": {
            "iterations": 8,
            "log_every": 1,
            "ckpt_every": 2,
            "val_every": 0,
            "ema": 0.9,
            "tensorboard": False,
        },
    }
    if d["method"]["name"] != "kd":
        d["teacher"] = None
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(d.get(key), dict) and key not in ("teacher", "method"):
            d[key] = {**d[key], **value}
        else:
            d[key] = value
    return d


def make_cfg(tmp: Path, method: Any = "kd", **sections: Any) -> TrainConfig:
    return validate(TrainConfig, cfg_dict(tmp, method, **sections), "test")


def write_cfg(tmp: Path, method: Any = "kd", **sections: Any) -> Path:
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg_dict(tmp, method, **sections)))
    return path


def final_state(run_dir: Path) -> dict[str, Any]:
    step, path = ckpt.list_checkpoints(run_dir)[-1]
    return ckpt.load_checkpoint(path)


def assert_states_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Student, EMA and optimiser states equal bit for bit."""
    assert a["step"] == b["step"]
    for key in a["student"]:
        assert torch.equal(a["student"][key], b["student"][key]), key
    for key in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    for pid, st in a["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, b["optimizer"]["state"][pid][name]), (pid, name)
    assert a["schedule"] == b["schedule"]


# -- fake methods exercising engine features ---------------------------------------------------------------
class NoisyConfig(MethodConfig):
    name: Literal["noisy"] = "noisy"
    nan_at: list[int] = []  # 1-based training_step calls that return a NaN loss
    fail_rank: int | None = None  # raise on this rank at the 3rd call (DDP failure test)


class Noisy(MethodBase):
    """Response KD plus every source of randomness a method may use (torch, python, numpy) and extra state."""

    Config = NoisyConfig
    needs_teacher = False

    def __init__(self, student, teacher, cfg, scale):  # type: ignore[no-untyped-def]
        super().__init__(student, teacher, cfg, scale)
        self.calls = 0

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.calls += 1
        if (
            self.cfg.fail_rank is not None
            and self.calls == 3
            and int(os.environ.get("RANK", 0)) == self.cfg.fail_rank
        ):
            raise RuntimeError(f"injected failure on rank {self.cfg.fail_rank}")
        noise = 0.01 * torch.randn_like(batch.lr) * (1 + random.random()) * (1 + float(np.random.rand()))
        loss = self.l1(self.student_sr(batch.lr + noise), batch.hr)
        if self.calls in self.cfg.nan_at:
            loss = loss * float("nan")
        return loss, {"l1": loss.detach()}

    def extra_state(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])


class GrowConfig(MethodConfig):
    name: Literal["grow"] = "grow"
    grow_at: int = 3


class Grow(MethodBase):
    """Progressive distillation in miniature: at ``grow_at`` the student gains a residual block."""

    Config = GrowConfig
    needs_teacher = False

    def __init__(self, student, teacher, cfg, scale):  # type: ignore[no-untyped-def]
        super().__init__(student, teacher, cfg, scale)
        self.grown = False

    def _grow(self) -> None:
        from srkd.models import build_model

        old = self.raw_student  # self.student is the engine's DDP wrapper in a multi-process run
        spec = old.spec
        bigger = build_model(spec.arch, **{**spec.kwargs, "n_resblocks": spec.kwargs["n_resblocks"] + 1})
        bigger.load_state_dict(old.state_dict(), strict=False)
        self.student = bigger
        self.grown = True

    def begin_stage(self, step: int) -> bool:
        if step == self.cfg.grow_at and not self.grown:
            self._grow()
            return True
        return False

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.l1(self.student_sr(batch.lr), batch.hr)
        return loss, {"l1": loss.detach()}

    def extra_state(self) -> dict[str, Any]:
        return {"grown": self.grown}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("grown") and not self.grown:
            self._grow()


def register_fake_methods() -> None:
    for name, cls in (("noisy", Noisy), ("grow", Grow)):
        module = types.ModuleType(f"srkd_test_method_{name}")
        module.Config, module.Method = cls.Config, cls  # type: ignore[attr-defined]
        sys.modules[module.__name__] = module
        METHODS[name] = module.__name__


@pytest.fixture(autouse=True)
def fake_methods():
    saved = dict(METHODS)
    register_fake_methods()
    yield
    METHODS.clear()
    METHODS.update(saved)


def runner_script(tmp: Path) -> Path:
    """A script that runs `srkd <args>` with the fake methods registered and the test's thread count."""
    script = tmp / "runner.py"
    script.write_text(
        "import sys, torch\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import test_engine\n"
        "test_engine.register_fake_methods()\n"
        "from srkd.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return script


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


# -- methods -----------------------------------------------------------------------------------------------
def test_scratch_and_kd_losses_are_the_documented_formulas() -> None:
    from srkd.distill import get_method
    from srkd.models import build_model

    torch.manual_seed(0)
    student = build_model("edsr", scale=2, n_feats=4, n_resblocks=1)
    teacher = build_model("edsr", scale=2, n_feats=8, n_resblocks=1)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    kd = get_method("kd")
    m = kd.Method(student, teacher, kd.Config(pix_weight=5.0), 2)
    loss, logs = m.training_step(Batch(lr, hr))
    s, t = student(lr), teacher(lr)
    expect = 5.0 * (s - hr).abs().mean() + (s - t).abs().mean()
    torch.testing.assert_close(loss, expect)
    torch.testing.assert_close(logs["kd"], (s - t).abs().mean())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(p.grad is not None for p in student.parameters())

    sc = get_method("scratch")
    m = sc.Method(student, None, sc.Config(), 2)
    loss, _ = m.training_step(Batch(lr, hr))
    torch.testing.assert_close(loss, (student(lr) - hr).abs().mean())


def test_unknown_method_is_a_config_error() -> None:
    from srkd.distill import get_method

    with pytest.raises(ConfigError, match="unknown method 'nope'.*known: scratch, kd"):
        get_method("nope")
    with pytest.raises(ConfigError, match=r"unknown key 'pixw' \(allowed: kd_weight, name, pix_weight, progressive\)"):
        make_cfg(Path("/nonexistent"), {"name": "kd", "pixw": 1}, data={"train": []})


# -- a run end to end --------------------------------------------------------------------------------------
def test_run_writes_config_log_checkpoints_and_models(tmp_path: Path) -> None:
    from srkd.checkpoint.io import load_model

    cfg = make_cfg(
        tmp_path, train={"tensorboard": True, "val_every": 4}, data={"val": [str(tmp_path / "train")]}
    )
    run = train(cfg)
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == {
        "name": "kd",
        "progressive": None,
        "pix_weight": 1.0,
        "kd_weight": 1.0,
    }
    recs = read_log(run / "log.jsonl")
    train_recs = [r for r in recs if r["type"] == "train"]
    assert [r["step"] for r in train_recs] == list(range(1, 9))
    assert {"loss", "pix", "kd", "lr", "it_s"} <= set(train_recs[0])
    # MultiStepLR at 3 and 6 iterations, x0.5: the lr logged after iteration k is the one for iteration k+1
    assert [r["lr"] for r in train_recs] == pytest.approx([1e-3] * 2 + [5e-4] * 3 + [2.5e-4] * 3)
    assert all(np.isfinite(r["loss"]) for r in train_recs)
    vals = [r for r in recs if r["type"] == "val"]
    assert [r["step"] for r in vals] == [4, 8] and vals[0]["set"] == "train" and vals[0]["psnr_y"] > 10
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [6, 8]  # keep_ckpt = 2
    model, meta = load_model(run / "last.safetensors", scale=2)
    assert meta["iteration"] == 8 and meta["ema"] is True and meta["method"] == "kd"
    state = final_state(run)
    for k, v in model.state_dict().items():  # last.safetensors holds the EMA weights
        assert torch.equal(v, state["ema"]["module"][k])
    best, _ = load_model(run / "best.safetensors", scale=2)
    assert state["best"]["step"] in (4, 8)
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_validation_scores_the_trained_weights_beside_the_ema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An EMA can score far below the weights it averages (an EDSR fine-tuned at Adam 1e-3: 23.7 dB against 30.3),
    and the exports hold the EMA: the log shows both, and says so once when the gap is large."""
    from srkd.engine import trainer
    from srkd.evaluation import evaluate_model
    from srkd.models import build_model

    val = str(tmp_path / "train")
    run = train(make_cfg(tmp_path, train={"val_every": 4}, data={"val": [val]}))
    vals = [r for r in read_log(run / "log.jsonl") if r["type"] == "val"]
    assert [r["step"] for r in vals] == [4, 8] and all({"raw_psnr_y", "raw_ssim_y"} <= set(r) for r in vals)
    raw = build_model("edsr", scale=2, n_feats=4, n_resblocks=1)
    raw.load_state_dict(final_state(run)["student"])
    got = evaluate_model(raw.eval(), [val], 2, progress=False)["train"]
    assert vals[-1]["raw_psnr_y"] == pytest.approx(got["psnr_y"], abs=1e-6)
    assert vals[-1]["raw_psnr_y"] != vals[-1]["psnr_y"]  # EMA 0.9 after 8 steps: not the same weights
    assert "raw weights" in capsys.readouterr().err
    assert "warning" not in capsys.readouterr().err

    # Without EMA the validated network is the trained one: nothing to add.
    run = train(make_cfg(tmp_path / "noema", train={"val_every": 4, "ema": None}, data={"val": [val]}))
    assert not any("raw_psnr_y" in r for r in read_log(run / "log.jsonl") if r["type"] == "val")

    # The warning's wiring (any gap counts here), once a run.
    monkeypatch.setattr(trainer, "EMA_LAG_DB", -1e9)
    train(make_cfg(tmp_path / "lag", train={"val_every": 4}, data={"val": [val]}))
    assert capsys.readouterr().err.count("warning: at iteration 4 the EMA weights score") == 1


def test_ema_lag_is_the_mean_gap_over_the_sets_past_its_threshold() -> None:
    from srkd.engine.trainer import EMA_LAG_DB, ema_lag

    def sets(**psnr: float) -> dict[str, dict[str, Any]]:
        return {k: {"psnr_y": v} for k, v in psnr.items()}

    assert ema_lag(sets(Set5=23.7), sets(Set5=30.3)) == pytest.approx(6.6)
    assert ema_lag(sets(Set5=30.0, B100=27.0), sets(Set5=31.5, B100=27.0)) == pytest.approx(0.75)
    assert ema_lag(sets(Set5=30.0), sets(Set5=30.0 + EMA_LAG_DB / 2)) is None  # small lags are normal
    assert ema_lag(sets(Set5=30.3), sets(Set5=30.2)) is None  # the usual case: the EMA ahead
    assert ema_lag(sets(Set5=30.0), None) is None and ema_lag(sets(Set5=30.0), sets(Set14=1.0)) is None


def test_resume_after_a_crash_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srkd.data.sampler import PatchSampler

    straight = train(make_cfg(tmp_path / "a", "noisy"))

    real_batch = PatchSampler.batch

    def crash_at_5(self, step):  # type: ignore[no-untyped-def]
        if step == 5:
            raise KeyboardInterrupt  # as if the process died during iteration 6
        return real_batch(self, step)

    cfg = make_cfg(tmp_path / "b", "noisy")
    monkeypatch.setattr(PatchSampler, "batch", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert [s for s, _ in ckpt.list_checkpoints(cfg.run_dir)] == [2, 4]
    monkeypatch.setattr(PatchSampler, "batch", real_batch)
    train(cfg, resume="auto")
    a, b = final_state(straight), final_state(cfg.run_dir)
    assert_states_equal(a, b)
    assert b["method"] == {"calls": 8}
    # the log reads as one run: iterations 5 (written before the crash) are not duplicated
    steps = [r["step"] for r in read_log(cfg.run_dir / "log.jsonl") if r["type"] == "train"]
    assert steps == list(range(1, 9))


def test_a_resumed_run_follows_the_configs_changed_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Extending a run and re-timing its decay on resume (--set sched.milestones=...) takes effect: the result
    equals a run trained with the new schedule from the start (torch's load_state_dict alone would keep the
    checkpoint's milestones, and its lr and betas, without a word)."""
    straight = train(make_cfg(tmp_path / "a", "noisy", sched={"milestones": [6], "gamma": 0.1}))
    cfg = make_cfg(tmp_path / "b", "noisy", train={"iterations": 4}, sched={"milestones": [100], "gamma": 0.5})
    train(cfg)
    longer = make_cfg(tmp_path / "b", "noisy", sched={"milestones": [6], "gamma": 0.1})
    capsys.readouterr()
    train(longer, resume="auto")
    assert_states_equal(final_state(straight), final_state(longer.run_dir))
    assert final_state(longer.run_dir)["schedule"]["milestones"] == [6]
    lrs = [r["lr"] for r in read_log(longer.run_dir / "log.jsonl") if r["type"] == "train"]
    assert lrs == pytest.approx([1e-3] * 5 + [1e-4] * 3)
    assert "sched.milestones [100] -> [6], sched.gamma 0.5 -> 0.1; the new values apply from iteration 4" in (
        capsys.readouterr().err)
    # and an lr changed at a resume past a decay restarts from the config's lr, decayed as often as scheduled
    hotter = make_cfg(tmp_path / "b", "noisy", train={"iterations": 10}, optim={"lr": 2e-3},
                      sched={"milestones": [6], "gamma": 0.1})
    train(hotter, resume="auto")
    lrs = [r["lr"] for r in read_log(hotter.run_dir / "log.jsonl") if r["type"] == "train"]
    assert lrs[8:] == pytest.approx([2e-4] * 2)
    assert "the config changed since that checkpoint: optim.lr [0.001] -> [0.002]; " in capsys.readouterr().err


def test_resume_skips_a_corrupt_newest_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    straight = train(make_cfg(tmp_path / "a", "noisy"))
    cfg = make_cfg(tmp_path / "b", "noisy", train={"iterations": 6})
    train(cfg)
    newest = ckpt.checkpoint_path(cfg.run_dir, 6)
    newest.write_bytes(newest.read_bytes()[:5000])  # truncated, as by a disk that filled up outside srkd
    cfg.train.iterations = 8
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean line for the user, not a warnings.warn "file:line: UserWarning"
        train(cfg, resume="auto")  # continues from iteration 4
    skipped = [line for line in capsys.readouterr().err.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and skipped[0].startswith(
        f"warning: skipping unreadable checkpoint: {newest}: corrupt or not a training checkpoint ("
    )
    assert_states_equal(final_state(straight), final_state(cfg.run_dir))
    with pytest.raises(CheckpointError, match="corrupt or not a training checkpoint"):
        ckpt.load_checkpoint(_truncated(tmp_path))


def _truncated(tmp: Path) -> Path:
    p = tmp / "trunc.pt"
    torch.save({"format": ckpt.FORMAT, "x": torch.zeros(1000)}, p)
    p.write_bytes(p.read_bytes()[:300])
    return p


def test_resuming_with_another_student_names_the_mismatch_and_keeps_the_run_config(tmp_path: Path) -> None:
    """The folder's config.yaml must keep describing the checkpoints in it when a resume is refused."""
    cfg = make_cfg(tmp_path, "noisy", train={"iterations": 2})
    train(cfg)
    before = (cfg.run_dir / "config.yaml").read_text()
    wider = make_cfg(tmp_path, "noisy", train={"iterations": 4},
                     student={"arch": "edsr", "kwargs": {"n_feats": 6, "n_resblocks": 1}})
    with pytest.raises(CheckpointError, match=r"does not fit this config \(size mismatch for .*continue that run "
                                              r"with its own config"):
        train(wider, resume="auto")
    assert (cfg.run_dir / "config.yaml").read_text() == before


def test_fresh_start_refuses_to_overwrite_checkpoints(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "scratch", train={"iterations": 2})
    train(cfg)
    with pytest.raises(ConfigError, match="already holds training checkpoints"):
        train(cfg, resume=None)
    assert ckpt.list_checkpoints(cfg.run_dir)
    # resuming a finished run is a no-op that keeps everything
    before = final_state(cfg.run_dir)
    train(cfg, resume="auto")
    assert_states_equal(before, final_state(cfg.run_dir))


def test_checkpoints_are_safe_to_load() -> None:
    """RNG states are plain tensors/lists: the whole state loads with weights_only=True and restores exactly."""
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    saved = ckpt.capture_rng()
    a = (random.random(), float(np.random.rand()), torch.rand(3))
    import io

    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    ckpt.restore_rng(torch.load(buf, weights_only=True))
    b = (random.random(), float(np.random.rand()), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


# -- faults ------------------------------------------------------------------------------------------------
def test_disk_full_is_a_clear_error_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import errno

    import srkd.io

    cfg = make_cfg(tmp_path, "scratch")
    calls = {"n": 0}

    def full_disk(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        fh = open(path, mode, *args, **kwargs)
        if "ckpt" in str(path) and mode == "wb":
            calls["n"] += 1
            if calls["n"] == 2:
                fh.close()
                raise OSError(errno.ENOSPC, "No space left on device")
        return fh

    monkeypatch.setattr(srkd.io, "open", full_disk, raising=False)  # every srkd write goes through srkd.io
    with pytest.raises(
        TrainingError, match=r"iter_00000004.pt: cannot write the training checkpoint \(No space left"
    ):
        train(cfg)
    assert [s for s, _ in ckpt.list_checkpoints(cfg.run_dir)] == [2]
    assert ckpt.load_checkpoint(ckpt.checkpoint_path(cfg.run_dir, 2))["step"] == 2
    assert not list((cfg.run_dir / "ckpt").glob(".*tmp"))  # no temp file left behind


def test_log_has_the_gradient_norm_before_clipping(tmp_path: Path) -> None:
    """A divergence shows first as a spike of the gradient norm: the log has its mean and max per window, as the
    optimiser saw it before ``train.grad_clip`` (a clip of 1e-9 would otherwise make every value 1e-9)."""
    cfg = make_cfg(tmp_path, "scratch", train={"log_every": 4, "grad_clip": 1e-9})
    train(cfg)
    recs = [r for r in read_log(cfg.run_dir / "log.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in recs] == [4, 8]
    for r in recs:
        assert r["grad_norm_max"] >= r["grad_norm"] > 1e-6
        assert r["grad_norm_max"] > r["grad_norm"]  # four different steps: the max is not the mean
    from srkd.report.figures import NOT_TERMS

    assert {"grad_norm", "grad_norm_max"} <= NOT_TERMS  # not plotted as loss terms


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_non_finite_loss_policy(tmp_path: Path, policy: str) -> None:
    cfg = make_cfg(tmp_path, {"name": "noisy", "nan_at": [5]}, train={"nonfinite": policy})
    if policy == "stop":
        with pytest.raises(
            TrainingError, match=r"non-finite loss at iteration 5 .*last good checkpoint is .*iter_00000004"
        ):
            train(cfg)
        assert [s for s, _ in ckpt.list_checkpoints(cfg.run_dir)] == [2, 4]
        return
    train(cfg)
    state = final_state(cfg.run_dir)
    assert state["skipped"] == 1 and state["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["student"].values())
    recs = [r for r in read_log(cfg.run_dir / "log.jsonl") if r["type"] == "train"]
    assert recs[-1]["skipped"] == 1 and all(np.isfinite(r["loss"]) for r in recs if r["step"] != 5)


def test_begin_stage_rebuilds_optimizer_and_ema_and_resumes_across_stages(tmp_path, monkeypatch):
    from srkd.data.sampler import PatchSampler

    straight = train(make_cfg(tmp_path / "a", {"name": "grow", "grow_at": 3}))
    state = final_state(straight)
    assert "body.1.conv1.weight" in state["student"] and "body.1.conv1.weight" in state["ema"]["module"]
    # the optimiser was rebuilt over the grown student's parameters (the new block's included)
    assert len(state["optimizer"]["state"]) == len(state["student"])
    recs = read_log(straight / "log.jsonl")
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, 9))

    # crash after the stage began, resume: load_extra_state re-grows the student before the weights are loaded
    real_batch = PatchSampler.batch
    for crash in (3, 5):  # 3: the checkpoint at 2 predates the stage; 5: the one at 4 is inside it
        cfg = make_cfg(tmp_path / f"b{crash}", {"name": "grow", "grow_at": 3})

        def crash_at(self, step, crash=crash):  # type: ignore[no-untyped-def]
            if step == crash:
                raise KeyboardInterrupt
            return real_batch(self, step)

        monkeypatch.setattr(PatchSampler, "batch", crash_at)
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
        monkeypatch.setattr(PatchSampler, "batch", real_batch)
        train(cfg)
        assert_states_equal(state, final_state(cfg.run_dir))


# -- kill -9 and resume, in real processes ----------------------------------------------------------------
def _kill_when_checkpoint(cmd: list[str], run_dir: Path, at_least: int, timeout: float = 120) -> None:
    """Start ``cmd`` and SIGKILL it as soon as a checkpoint of iteration >= ``at_least`` exists."""
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            found = ckpt.list_checkpoints(run_dir)
            if found and found[-1][0] >= at_least:
                break
            if proc.poll() is not None:
                raise AssertionError(f"run ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def _straight_final(tmp: Path, iterations: int) -> dict[str, Any]:
    cfg = make_cfg(
        tmp / "straight", "noisy", train={"iterations": iterations, "ckpt_every": 1, "keep_ckpt": 1}
    )
    return final_state(train(cfg))


def test_sigkill_then_resume_auto_is_bit_identical(tmp_path: Path) -> None:
    """Acceptance: kill -9 a CPU run at a random iteration, `--resume auto`, final weights equal bit for bit."""
    iterations = 10
    expect = _straight_final(tmp_path, iterations)
    k = random.Random().randint(2, iterations - 2)
    path = write_cfg(
        tmp_path / "killed", "noisy", train={"iterations": iterations, "ckpt_every": 1, "keep_ckpt": 1}
    )
    run_dir = tmp_path / "killed" / "run"
    cmd = [PY, str(runner_script(tmp_path)), "train", str(path)]
    _kill_when_checkpoint(cmd, run_dir, k)
    killed_at = ckpt.list_checkpoints(run_dir)[-1][0]
    train(load_config(TrainConfig, path), resume="auto")  # in this process: same thread count as the runner
    start = [r for r in read_log(run_dir / "log.jsonl") if r["type"] == "start"]
    assert start[-1]["resumed_from"] is not None and start[-1]["step"] == killed_at >= k
    assert_states_equal(expect, final_state(run_dir))


def test_sigkill_during_checkpoint_write_leaves_no_partial_file(tmp_path: Path) -> None:
    """A kill between writing the temp file and renaming it: the final name never holds a partial file."""
    iterations = 6
    expect = _straight_final(tmp_path, iterations)
    path = write_cfg(
        tmp_path / "k", "noisy", train={"iterations": iterations, "ckpt_every": 1, "keep_ckpt": 1}
    )
    run_dir = tmp_path / "k" / "run"
    script = runner_script(tmp_path)
    text = script.read_text().replace(
        "from srkd.cli.main import main\n",
        "import os, signal\nimport srkd.io as st\n_rep = os.replace\n"
        "def _replace(a, b):\n"
        "    if str(b).endswith('iter_00000003.pt'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _rep(a, b)\n"
        "st.os.replace = _replace\n"
        "from srkd.cli.main import main\n",
    )
    killer = tmp_path / "killer.py"
    killer.write_text(text)
    out = subprocess.run(
        [PY, str(killer), "train", str(path)], env=subprocess_env(), capture_output=True, text=True
    )
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [2]
    assert list((run_dir / "ckpt").glob(".iter_00000003.pt.*.tmp"))  # the orphan temp file exists...
    train(load_config(TrainConfig, path), resume="auto")
    assert not list((run_dir / "ckpt").glob(".*.tmp"))  # ...and is cleaned up by the next save
    assert_states_equal(expect, final_state(run_dir))


@pytest.mark.slow
def test_sigkill_at_20_random_points_then_resume_is_bit_identical(tmp_path: Path) -> None:
    """Issue 7: kill the same run 20 times at random moments (also mid-write); it still ends bit-identical.

    Each kill waits for the run to make progress (a new checkpoint) and then lands after a random delay of
    up to half a second, i.e. anywhere in an iteration or a checkpoint write, whatever the machine's load.
    """
    iterations = 30
    expect = _straight_final(tmp_path, iterations)
    path = write_cfg(
        tmp_path / "k", "noisy", train={"iterations": iterations, "ckpt_every": 1, "keep_ckpt": 2}
    )
    run_dir = tmp_path / "k" / "run"
    cmd = [PY, str(runner_script(tmp_path)), "train", str(path)]
    rng = random.Random()
    progress: list[int] = []
    for _ in range(20):
        before = progress[-1] if progress else 0
        proc = subprocess.Popen(
            cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            found = ckpt.list_checkpoints(run_dir)
            if found and found[-1][0] > before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        found = ckpt.list_checkpoints(run_dir)
        progress.append(found[-1][0] if found else 0)
    # every kill came after progress, progress never went backwards, and the final run resumes
    assert all(b > a for a, b in zip([0, *progress], progress) if b < iterations), progress
    out = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_states_equal(expect, final_state(run_dir))


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_is_bit_identical(tmp_path: Path) -> None:
    """SIGTERM (a scheduler or `kill`; Ctrl-C takes the same path) ends the current iteration, saves a training
    checkpoint of it and exits with status 130: nothing since the last regular checkpoint is lost."""
    path = write_cfg(tmp_path / "s", "noisy", train={"iterations": 10_000, "ckpt_every": 10_000})
    run_dir = tmp_path / "s" / "run"
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "wb") as err:
        proc = subprocess.Popen(
            [PY, str(runner_script(tmp_path)), "train", str(path)],
            env=subprocess_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:
                log = run_dir / "log.jsonl"
                if log.exists() and any(r["type"] == "train" and r["step"] >= 3 for r in read_log(log)):
                    break
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = err_file.read_text()
    assert code == 130, text[-2000:]
    assert "SIGTERM: stopping after this iteration" in text and "interrupted" in text
    assert "Traceback" not in text
    saved = ckpt.list_checkpoints(run_dir)
    assert len(saved) == 1  # no regular checkpoint was due: this is the one the signal wrote
    k = saved[0][0]
    recs = read_log(run_dir / "log.jsonl")
    assert [r["step"] for r in recs if r["type"] == "train"] == list(range(1, k + 1))
    assert recs[-1] == {**recs[-1], "type": "stop", "step": k, "signal": "SIGTERM"}
    assert not list((run_dir / "ckpt").glob(".*.tmp"))

    cfg = load_config(TrainConfig, path)
    cfg.train.iterations = k + 2
    train(cfg, resume="auto")
    assert_states_equal(_straight_final(tmp_path, k + 2), final_state(run_dir))


def test_a_second_ctrl_c_aborts_but_a_duplicate_delivery_does_not() -> None:
    from srkd.engine.trainer import StopSignals

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in a background job
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == "SIGINT"
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun passing the same Ctrl-C on: no abort
        os.kill(os.getpid(), signal.SIGINT)  # within a second of the first: the same request
        stop._when -= 2.0  # a second later the user presses Ctrl-C again
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_read_log_tolerates_a_last_line_cut_by_a_kill(tmp_path: Path) -> None:
    from srkd.errors import DataError

    log = tmp_path / "log.jsonl"
    good = [{"type": "start", "step": 0}, {"type": "train", "step": 1, "loss": 0.5}]
    text = "".join(json.dumps(r) + "\n" for r in good)
    log.write_text(text + '{"type": "train", "st')
    assert read_log(log) == good
    log.write_text(text + '{"type": "train", "st\n')
    assert read_log(log) == good
    log.write_text('{"type": "tr\n' + text)
    with pytest.raises(DataError, match=r"log.jsonl: line 1 is not valid JSON"):
        read_log(log)


def test_training_lr_images_are_cached_under_the_data_root(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "scratch", train={"iterations": 1})
    train(cfg)
    cached = sorted((tmp_path / "data_root" / "cache" / "lr").rglob("*.png"))
    assert len(cached) == 4  # one LR image per training image, made once and reused by later runs


def test_export_records_every_scale_of_a_multi_scale_student(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srkd.checkpoint.io import read_metadata

    init = Noisy.__init__

    def multi_scale(self, *args):  # type: ignore[no-untyped-def]
        init(self, *args)
        self.scales = [2, 3, 4]  # as the data-free VDSR method sets them (Method.scales)

    monkeypatch.setattr(Noisy, "__init__", multi_scale)
    cfg = make_cfg(
        tmp_path, "noisy", student={"arch": "vdsr", "kwargs": {"n_feats": 4, "n_layers": 3}}, train={"iterations": 1}
    )
    run = train(cfg)
    assert read_metadata(run / "last.safetensors")["scales"] == [2, 3, 4]


@pytest.mark.filterwarnings("ignore:CSD. no VGG19 weights")
def test_csd_validates_and_exports_the_extracted_slim_student(tmp_path: Path) -> None:
    from srkd.checkpoint.io import load_model

    val = make_images(tmp_path / "val", n=1, size=32, seed=1)
    cfg = make_cfg(
        tmp_path,
        {"name": "csd", "num_neg": 2},
        student={"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}},
        data={"val": [str(val)]},
        train={"iterations": 2},
    )
    run = train(cfg)
    model, meta = load_model(run / "last.safetensors", scale=2)
    assert meta["kwargs"]["n_feats"] == 2  # round(0.25 * 8): the slim student, not the slimmable network
    state = final_state(run)
    assert state["student"]["head.weight"].shape[0] == 8  # training checkpoints keep the whole network
    ema = state["ema"]["module"]
    for k, v in model.state_dict().items():  # the EMA copy's prefix slices
        assert torch.equal(v, ema[k][tuple(slice(0, d) for d in v.shape)]), k
    assert [r["step"] for r in read_log(run / "log.jsonl") if r["type"] == "val"] == [2]


@pytest.mark.filterwarnings("ignore:CSD. no VGG19 weights")
@pytest.mark.parametrize("init", [True, False])
def test_csd_starts_from_the_teacher_checkpoint_it_names(tmp_path: Path, init: bool) -> None:
    """The engine loads a CSD config's teacher to initialise the slimmable network. It once skipped every
    teacher of a method that trains without one, so ``init_from_teacher`` silently did nothing and the recipes
    started CSD from random weights."""
    from srkd.checkpoint.io import save_model
    from srkd.models import build_model

    torch.manual_seed(123)
    arch = {"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}}
    teacher = build_model("edsr", scale=2, **arch["kwargs"])
    save_model(tmp_path / "teacher.safetensors", teacher)
    cfg = make_cfg(
        tmp_path,
        {"name": "csd", "num_neg": 2, "init_from_teacher": init},
        student=arch,
        teacher={"checkpoint": str(tmp_path / "teacher.safetensors")},
        optim={"lr": 1e-12},  # one step that moves nothing measurable: the checkpoint shows the start
        train={"iterations": 1, "ckpt_every": 1},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = train(cfg)
    ignored = [w for w in caught if "section is ignored" in str(w.message)]
    assert len(ignored) == (0 if init else 1)
    start = final_state(run)["student"]
    same = [torch.allclose(start[k], v, atol=1e-9) for k, v in teacher.state_dict().items()]
    assert all(same) if init else not all(same)
    if init:  # a warm start as well would be overwritten: refused before anything runs
        cfg.student.init = str(tmp_path / "teacher.safetensors")
        with pytest.raises(ConfigError, match="student.init .* would be overwritten"):
            train(cfg)


def test_jsonl_log_is_valid_json_lines(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "scratch", train={"iterations": 3, "log_every": 2})
    train(cfg)
    lines = (cfg.run_dir / "log.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert recs[0]["type"] == "start" and recs[0]["precision"] == "fp32" and recs[0]["global_batch"] == 2
    assert [r["step"] for r in recs if r["type"] == "train"] == [2, 3]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_channels_last_train(tmp_path: Path, precision: str) -> None:
    cfg = make_cfg(tmp_path, "kd", train={"precision": precision, "channels_last": True, "iterations": 3})
    with warnings.catch_warnings():  # bf16 warns on CPUs without bf16 kernels, fp16 on every CPU
        warnings.simplefilter("ignore")
        run = train(cfg)
    recs = [r for r in read_log(run / "log.jsonl") if r["type"] == "train"]
    assert len(recs) == 3 and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in recs)
    state = final_state(run)
    assert (state["scaler"] is not None) == (precision == "fp16")
    assert state["student"]["head.weight"].dtype == torch.float32  # master weights stay fp32


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_device_runs_it_natively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """On a CPU without AVX512-BF16/AMX, bf16 is emulated and ~11x slower than fp32: ``auto`` must pick fp32
    there (recorded in the log), and an explicit bf16 must say why it will crawl."""
    import srkd.precision as prec

    monkeypatch.setattr(prec.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    def run_with(precision: str) -> tuple[Path, list[str]]:
        cfg = make_cfg(tmp_path / precision, "kd", train={"precision": precision, "iterations": 1})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = train(cfg)
        return run, [str(w.message) for w in caught if "precision" in str(w.message)]

    run, said = run_with("auto")
    assert said == []  # auto never warns
    start = next(r for r in read_log(run / "log.jsonl") if r["type"] == "start")
    assert start["precision"] == ("bf16" if native else "fp32")
    run, said = run_with("bf16")
    assert len(said) == (0 if native else 1) and (native or "emulated" in said[0] and "precision=auto" in said[0])
    assert next(r for r in read_log(run / "log.jsonl") if r["type"] == "start")["precision"] == "bf16"  # obeyed


def test_validation_data_lost_mid_run_keeps_the_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import srkd.engine.trainer as ev  # the engine's evaluate_model
    from srkd.errors import DataError

    val = make_images(tmp_path / "val", n=2, size=32, seed=1)
    cfg = make_cfg(tmp_path, "scratch", data={"val": [str(val)]}, train={"val_every": 2, "ckpt_every": 100})
    real, calls = ev.evaluate_model, {"n": 0}
    per_validation = 2 if cfg.train.ema else 1  # with EMA on, the trained weights are scored too

    def vanishing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == per_validation + 1:
            shutil.rmtree(val)  # the network share went away between two validations
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "evaluate_model", vanishing)
    with pytest.raises(DataError, match="val"):
        train(cfg)
    assert [s for s, _ in ckpt.list_checkpoints(cfg.run_dir)] == [4]  # saved although ckpt_every is 100
    assert (cfg.run_dir / "best.safetensors").exists()


@pytest.mark.slow
def test_compiled_student_trains_and_saves_plain_keys(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "kd", train={"compile": True, "iterations": 2})
    state = final_state(train(cfg))
    assert "head.weight" in state["student"] and not any("_orig_mod" in k for k in state["student"])


def test_a_decay_after_the_last_iteration_is_warned_about(tmp_path: Path) -> None:
    """A paper recipe cut to a short budget keeps its 1e5 milestones: the user is told the rate never decays."""
    with pytest.warns(UserWarning, match=r"decay at iteration 6 comes after the last of train.iterations=4"):
        train(make_cfg(tmp_path / "a", "noisy", train={"iterations": 4}, sched={"milestones": [2, 6]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(make_cfg(tmp_path / "b", "noisy", train={"iterations": 4}, sched={"milestones": [2, 3]}))


def test_a_student_as_big_as_its_teacher_is_warned_about(tmp_path: Path) -> None:
    big = {"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}}  # the teacher's size in cfg_dict
    with pytest.warns(UserWarning, match=r"the student \(0\.\d+ M parameters\) is not smaller than its teacher"):
        train(make_cfg(tmp_path / "a", "kd", student=big, train={"iterations": 2, "ckpt_every": 2}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(make_cfg(tmp_path / "b", "kd", train={"iterations": 2, "ckpt_every": 2}, sched={"milestones": [1]}))
    assert not [w for w in caught if "not smaller than its teacher" in str(w.message)]  # 4 features vs 8: quiet


def test_validation_and_its_tensorboard_sample_do_not_change_a_stochastic_students_training(tmp_path: Path) -> None:
    """SwinIR's stochastic depth draws from the global stream; the TensorBoard sample once ran the student in
    train mode outside the preserved streams, so a run's weights depended on val_every and on whether
    TensorBoard was installed (SwinIR x4 quick: Set5 29.37 with val_every 500, 29.38 with 0)."""
    pytest.importorskip("tensorboard")
    student = {
        "arch": "swinir",
        "kwargs": {"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "mlp_ratio": 2.0,
                   "upsampler": "pixelshuffledirect", "drop_path_rate": 0.5},
    }
    quiet = make_cfg(tmp_path / "a", "scratch", student=student, train={"iterations": 6})
    watched = make_cfg(
        tmp_path / "b", "scratch", student=student,
        train={"iterations": 6, "val_every": 2, "tensorboard": True},
        data={"val": [str(make_images(tmp_path / "val", n=1, size=32, seed=1))]},
    )
    a, b = final_state(train(quiet)), final_state(train(watched))
    assert [r["type"] for r in read_log(watched.run_dir / "log.jsonl")].count("val") == 3
    assert (watched.run_dir / "tb").exists()
    for key in a["student"]:
        assert torch.equal(a["student"][key], b["student"][key]), key
