"""Progressive growth as every output-level method's ``method.progressive``, and what the split of the data-free
method into growth, generator and DFSR kept: checkpoints and saved configs of the previous layout, sample grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_engine import assert_states_equal, final_state, make_cfg

from srkd.data.sampler import PatchSampler
from srkd.engine import state as ckpt
from srkd.engine.config import TrainConfig, resolved_config
from srkd.engine.trainer import train
from srkd.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore:teacher has no checkpoint", "ignore:the learning-rate decay")

GROW = {"stages": [3, 5]}
STUDENT = {"arch": "edsr", "kwargs": {"n_feats": 4, "n_resblocks": 2}}


@pytest.mark.parametrize("name", ["kd", "scratch", "dukd"])
def test_a_growing_run_ends_at_full_depth_and_resumes_bit_for_bit(tmp_path: Path, monkeypatch: Any, name: str) -> None:
    method = {"name": name, "progressive": GROW}
    teacher = {"teacher": {"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}}} if name != "scratch" else {}
    straight = final_state(train(make_cfg(tmp_path / "a", method, student=STUDENT, **teacher)))
    assert "body.1.conv1.weight" in straight["student"] and straight["method"] == {"stage": 1}
    assert len(straight["optimizer"]["state"]) == len(straight["student"])  # the grown student's optimiser

    real = PatchSampler.batch

    def crash_at_5(self: PatchSampler, step: int) -> Any:  # inside stage 1; the last checkpoint (4) too
        if step == 5:
            raise KeyboardInterrupt
        return real(self, step)

    cfg = make_cfg(tmp_path / "b", method, student=STUDENT, **teacher)
    monkeypatch.setattr(PatchSampler, "batch", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(PatchSampler, "batch", real)
    assert_states_equal(straight, final_state(train(cfg)))


def test_a_grown_checkpoint_resumed_without_growth_is_one_line(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, {"name": "kd", "progressive": GROW}, student=STUDENT)
    train(cfg)
    ckpt.checkpoint_path(cfg.run_dir, 8).unlink()
    plain = make_cfg(tmp_path, {"name": "kd"}, student=STUDENT)
    with pytest.raises(CheckpointError, match="progressive stage 1, but this config has no method.progressive") as e:
        train(plain)
    assert "\n" not in str(e.value)


def datafree(tmp: Path, **method: Any) -> TrainConfig:
    c = make_cfg(tmp, {"name": "datafree", "image_size": 8, "generator": {"every": 2, "optim": {"lr": 1e-3}},
                       "progressive": GROW, **method}, student=STUDENT,
                 teacher={"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}}, data={"train": []})
    c.data = type(c.data)(batch_size=2, data_root=c.data.data_root)
    return c


def test_a_data_free_checkpoint_keeps_the_keys_of_the_previous_layout(tmp_path: Path) -> None:
    """Checkpoints written before the split (method state: stage, rng, skipped, generators, gen_optimizers) load
    as they are: the split kept every key. (Checked against the snapshot of the old code too: its checkpoint at
    iteration 10 of the golden data-free run resumes here into the recorded final weights.)"""
    run = train(datafree(tmp_path))
    state = final_state(run)["method"]
    assert set(state) == {"stage", "rng", "skipped", "generators", "gen_optimizers"}
    old = {**state, "gen_optimizers": {k: v for k, v in state["gen_optimizers"].items()}}  # the old dict shape
    c = datafree(tmp_path / "again")
    train(c)
    saved = ckpt.load_checkpoint(ckpt.checkpoint_path(c.run_dir, 8))
    saved["method"] = old
    ckpt.save_checkpoint(ckpt.checkpoint_path(c.run_dir, 8), saved)
    c.train.iterations = 10
    resumed = final_state(train(c))
    assert resumed["step"] == 10 and resumed["method"]["stage"] == 1


def test_a_saved_config_of_the_previous_layout_is_the_same_run(tmp_path: Path) -> None:
    """A finished run's config.yaml spelled the old way (flat gen_* keys, progressive: true + stages) resolves to
    today's config of that run, so reproduce and the demo reuse it instead of training it again."""
    cfg = datafree(tmp_path, generator={"every": 2, "optim": {"lr": 1e-3}, "sched": {"step_size": 4}},
                   progressive={"stages": [3, 5], "init": "identity"})
    new = cfg.model_dump(mode="json")
    m = dict(new["method"])
    m.pop("generator")
    grow = m.pop("progressive")
    old = {**new, "method": {
        **m, "progressive": True, "stages": grow["stages"], "growth_init": "identity", "stage_optimizer": "restart",
        "gen_every": 2, "gen_batch_size": None, "latent_dim": 256, "gen_criterion": None, "gen_reduction": "mean",
        "gen_lr": 1e-3, "gen_betas": [0.9, 0.999], "gen_milestones": [], "gen_step_size": 4, "gen_gamma": 0.1,
        "nonfinite": "stop", "max_skips": 10}}
    assert resolved_config(yaml.safe_load(yaml.safe_dump(old))) == new
    old["method"]["nonfinite"] = "skip"  # a policy the run's train section does not say: not the same run
    assert resolved_config(old) != new


def test_the_sample_grid_is_written_by_the_run_logger_where_reports_find_it(tmp_path: Path) -> None:
    c = datafree(tmp_path, sample_every=4)
    run = train(c)
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["iter_00000004.png", "iter_00000008.png"]


def test_the_generator_obeys_the_runs_nonfinite_policy(tmp_path: Path, monkeypatch: Any) -> None:
    from srkd.distill import datafree as df

    monkeypatch.setattr(df.Method, "reconstruction_loss", lambda *a: torch.tensor(float("nan")))
    c = datafree(tmp_path, progressive=None)
    c.train.nonfinite, c.train.max_skips = "skip", 100
    with pytest.warns(UserWarning, match="generator update skipped"):
        train(c)
    assert final_state(c.run_dir)["method"]["skipped"] == 4  # generator steps at 2, 4, 6, 8
