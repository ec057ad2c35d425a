"""Data-free distillation through the training engine: no data loader, progressive stages, bit-exact resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_engine import assert_states_equal, final_state, make_cfg

from srkd.distill import datafree
from srkd.engine.logging import read_log
from srkd.engine.trainer import train

METHOD = {
    "name": "datafree",
    "image_size": 8,
    "generator": {"every": 2, "optim": {"lr": 1e-3}},
    "progressive": {"stages": [3, 5]},
}


def cfg(tmp: Path, **method):
    c = make_cfg(
        tmp,
        {**METHOD, **method},
        student={"arch": "edsr", "kwargs": {"n_feats": 4, "n_resblocks": 2}},
        teacher={"arch": "edsr", "kwargs": {"n_feats": 8, "n_resblocks": 1}},
        data={"train": [], "batch_size": 2},
    )
    c.data = type(c.data)(batch_size=2, data_root=c.data.data_root)  # no lr_patch: datafree would warn
    return c


pytestmark = pytest.mark.filterwarnings("ignore:teacher has no checkpoint")


def test_datafree_run_grows_the_student_and_logs_generator_terms(tmp_path: Path) -> None:
    run = train(cfg(tmp_path))
    state = final_state(run)
    assert "body.1.conv1.weight" in state["student"]  # S_1 = the configured 2-block student
    assert state["method"]["stage"] == 1 and set(state["method"]["generators"]) == {"2"}
    recs = [r for r in read_log(run / "log.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in recs] == list(range(1, 9))
    gen_steps = [r for r in recs if "L_G" in r]
    assert [r["step"] for r in gen_steps] == [2, 4, 6, 8]  # one generator update every generator.every iterations
    assert all(r["diversity"] > 0 for r in gen_steps)


def test_datafree_says_it_ignores_training_images(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    c.data = type(c.data)(train=[str(tmp_path / "train")], lr_patch=8, batch_size=2)  # a user with some images
    c.train.iterations = 1
    with pytest.warns(UserWarning, match=r"data.train, data.lr_patch ignored"):
        train(c)
    c = cfg(tmp_path / "quiet")
    c.train.iterations = 1
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*makes its own training images")
        train(c)


@pytest.mark.parametrize("growth", [{}, {"progressive": {"stages": [3, 5], "init": "identity", "optimizer": "carry"}},
                                    {"fidelity": "code", "upcycle": {"zoom_in": True, "zoom_out": True,
                                                                     "augment": True, "augment_p": 0.5}}])
def test_datafree_resume_after_a_crash_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, growth) -> None:
    straight = final_state(train(cfg(tmp_path / "a", **growth)))
    real = datafree.Method.next_batch
    for crash in (3, 5):  # before the stage boundary's checkpoint, and inside stage 1
        calls = {"n": 0}

        def crashing(self, batch_size, crash=crash, calls=calls):  # type: ignore[no-untyped-def]
            if calls["n"] == crash:
                raise KeyboardInterrupt
            calls["n"] += 1
            return real(self, batch_size)

        c = cfg(tmp_path / f"b{crash}", **growth)
        monkeypatch.setattr(datafree.Method, "next_batch", crashing)
        with pytest.raises(KeyboardInterrupt):
            train(c)
        monkeypatch.setattr(datafree.Method, "next_batch", real)
        resumed = final_state(train(c))
        assert_states_equal(straight, resumed)
        for k, v in straight["method"]["generators"]["2"].items():
            assert torch.equal(v, resumed["method"]["generators"]["2"][k]), k
        assert torch.equal(straight["method"]["rng"], resumed["method"]["rng"])


def test_a_resumed_datafree_run_uses_the_configs_generator_optimiser(tmp_path: Path) -> None:
    """generator.optim and .sched changed on resume apply, as the student's optimiser settings do."""
    c = cfg(tmp_path, progressive=False)
    c.train.iterations = 4
    train(c)
    c = cfg(tmp_path, progressive=False, generator={"every": 2, "optim": {"lr": 5e-4, "betas": (0.5, 0.9)}})
    train(c)
    group = final_state(c.run_dir)["method"]["gen_optimizers"]["2"]["param_groups"][0]
    assert group["lr"] == 5e-4 and tuple(group["betas"]) == (0.5, 0.9)


def test_noise_baseline_trains_without_generator(tmp_path: Path) -> None:
    run = train(cfg(tmp_path, inputs="noise", adversarial=False, reconstruction=False, progressive=False))
    state = final_state(run)
    assert state["method"]["generators"] == {} and "stage" not in state["method"]  # no growth, no stage
    recs = [r for r in read_log(run / "log.jsonl") if r["type"] == "train"]
    assert all("L_G" not in r for r in recs) and all(r["loss"] > 0 for r in recs)


def test_the_lr_schedule_counts_within_each_stage_and_a_decay_no_stage_reaches_is_warned_about(tmp_path: Path):
    # stages [3, 5] of 8 iterations: the optimiser and schedule restart at iteration 3, so a milestone at 4 decays
    # the rate at iteration 3 + 4 = 7 (and not in stage 0), and one at 6 is past the end of both stages
    c = cfg(tmp_path / "a")
    c.sched.milestones, c.sched.gamma, c.train.log_every = [4], 0.5, 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "teacher has no checkpoint")
        run = train(c)
    lrs = {r["step"]: r["lr"] for r in read_log(run / "log.jsonl") if r["type"] == "train"}
    base = c.optim.lr
    # the rate logged at step s is the one the next iteration uses: iteration 7 (0-based) is the first decayed
    assert [lrs[s] / base for s in range(1, 9)] == [1, 1, 1, 1, 1, 1, 0.5, 0.5]
    c = cfg(tmp_path / "b")
    c.sched.milestones = [6]
    with pytest.warns(UserWarning, match=r"after the end of every training stage \(lengths \[3, 5\]"):
        train(c)


def test_carry_keeps_the_adam_moments_of_the_weights_that_stay_and_one_schedule(tmp_path: Path, monkeypatch):
    from srkd.engine import trainer

    seen = {}
    real = trainer.carry_optim

    def spy(old, new, method):  # type: ignore[no-untyped-def]
        seen["before"] = {n: old.optimizer.state[p]["exp_avg"].clone() for p, n in zip(old.params, old.names)}
        real(old, new, method)
        names = dict(zip(map(id, new.params), new.names))
        seen["after"] = {names[id(p)]: st["exp_avg"].clone() for p, st in new.optimizer.state.items()}
        seen["new"] = set(new.names) - set(old.names)

    monkeypatch.setattr(trainer, "carry_optim", spy)
    c = cfg(tmp_path, progressive={"stages": [3, 5], "optimizer": "carry"})
    c.sched.milestones, c.sched.gamma, c.train.log_every = [4], 0.5, 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "teacher has no checkpoint")
        run = train(c)
    assert seen["new"] and all(n.startswith("body.1.") for n in seen["new"])
    assert set(seen["after"]) == set(seen["before"])  # new blocks start with no state, old ones keep theirs
    for name, moment in seen["before"].items():
        assert torch.equal(seen["after"][name], moment), name
    lrs = {r["step"]: r["lr"] for r in read_log(run / "log.jsonl") if r["type"] == "train"}
    # one schedule over the run: the milestone at 4 counts from iteration 0 although the student grew at 3
    assert [lrs[s] / c.optim.lr for s in range(1, 9)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5]
