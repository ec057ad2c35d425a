"""Data-free distillation (DFSR): generator shapes, where gradients go, progressive growth, baselines, resume.

Tiny random VDSR/EDSR models keep every test well under a second; the real-teacher experiments live in
benchmarks/results/dfsr-table2-quick.md.
"""

from __future__ import annotations

import io

import pytest
import torch

from srkd.config_base import validate
from srkd.distill import get_method
from srkd.distill.base import Batch
from srkd.distill.datafree import Config, Method, pairwise_l1
from srkd.distill.progressive import body_split
from srkd.errors import ConfigError, TrainingError
from srkd.models import build_model
from srkd.optim_base import NonfinitePolicy


def vdsr(n_feats: int = 8, n_layers: int = 6) -> torch.nn.Module:
    return build_model("vdsr", scale=2, n_feats=n_feats, n_layers=n_layers)


def make(student=None, teacher=None, scale: int = 2, **cfg) -> Method:
    gen = {"every": 1, "optim": {"lr": 1e-3}, **cfg.pop("generator", {})}
    cfg = {"name": "datafree", "progressive": False, "generator": gen, "image_size": 24, **cfg}
    torch.manual_seed(0)
    return Method(student or vdsr(), teacher or vdsr(16), Config.model_validate(cfg), scale)


def test_registry_and_config_errors():
    assert get_method("datafree").Method is Method
    with pytest.raises(ConfigError, match="stages"):
        validate(Config, {"name": "datafree", "progressive": {"stages": [10]}})
    with pytest.raises(ConfigError, match="no generator"):
        validate(Config, {"name": "datafree", "progressive": False, "inputs": "noise"})
    with pytest.raises(ConfigError, match="unknown key 'k'"):
        validate(Config, {"name": "datafree", "progressive": False, "k": 5})
    with pytest.raises(ConfigError, match="fixed x2 upsampler"):
        make(student=build_model("edsr", scale=2, n_feats=8, n_resblocks=2),
             teacher=build_model("edsr", scale=2, n_feats=8, n_resblocks=2), scales=[2, 3])


def test_one_generator_per_scale_with_table1_shapes():
    # Layer shapes of supplement Table 1 (the models' own tests pin the architecture; here: what the method builds)
    m = make(scales=[2, 3, 4], image_size=48)
    assert sorted(m.generators) == ["2", "3", "4"]
    for s, size in ((2, 24), (3, 16), (4, 12)):
        g = m.generators[str(s)]
        init = size // 4
        assert g.fc.weight.shape == (128 * init * init, 256)
        assert g.conv1.weight.shape == (128, 128, 3, 3)
        assert g.conv2.weight.shape == (64, 128, 3, 3)
        assert g.conv_out.weight.shape == (1, 64, 3, 3)
        x = m._sample(s, 3)
        assert x.shape == (3, 1, size, size) and 0 <= x.min() and x.max() <= 1
    edsr = build_model("edsr", scale=2, n_feats=8, n_resblocks=2)
    m = make(student=edsr, teacher=build_model("edsr", scale=2, n_feats=8, n_resblocks=2), image_size=48)
    assert list(m.generators) == ["2"] and m.next_batch(2).lr.shape == (2, 3, 48, 48)


def test_batches_carry_their_scale_in_their_size():
    m = make(scales=[2, 3, 4], image_size=48)
    seen = set()
    for _ in range(30):
        b = m.next_batch(2)
        assert b.hr is None and not b.lr.requires_grad
        seen.add(m.scale_of(b.lr))
        loss, logs = m.training_step(b)
        assert loss.requires_grad and torch.isfinite(loss)
    assert seen == {2, 3, 4}
    with pytest.raises(TrainingError, match="matches no generator"):
        m.scale_of(torch.zeros(1, 1, 7, 7))


def test_generator_gradients_reach_generator_not_teacher():
    m = make()
    gen = m.generators["2"]
    losses = m.generator_losses(2, 4)
    for term in ("L_GEN", "L_R"):
        grads = torch.autograd.grad(losses[term], list(gen.parameters()), retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads), term
        assert sum(float(g.abs().sum()) for g in grads) > 0, term
    losses["L_G"].backward()  # a plain backward too: the frozen teacher must stay gradient-free
    assert all(not p.requires_grad and p.grad is None for p in m.teacher.parameters())
    # L_GEN is -log(1 + L_KD): maximising the teacher-student gap
    assert losses["L_GEN"].item() == pytest.approx(-torch.log1p(losses["L_KD_G"]).item(), rel=1e-6)


def test_generator_step_updates_only_the_generator():
    m = make(generator={"every": 2})
    gen_before = [p.detach().clone() for p in m.generators["2"].parameters()]
    stu_before = [p.detach().clone() for p in m.student.parameters()]
    assert m.after_optimizer_step(0) == {}  # iteration 1 of k=2: no generator step
    logs = m.after_optimizer_step(1)
    assert {"L_GEN", "L_R", "L_G", "L_KD_G", "diversity"} <= set(logs)
    assert logs["diversity"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(gen_before, m.generators["2"].parameters()))
    assert all(torch.equal(a, b) for a, b in zip(stu_before, m.student.parameters()))
    assert all(p.grad is None for p in m.student.parameters())


def test_ablation_switches_select_the_loss_terms():
    for adv, rec in ((True, False), (False, True)):
        m = make(adversarial=adv, reconstruction=rec, w_r=2.0)
        out = {k: v.item() for k, v in m.generator_losses(2, 3).items()}
        expected = (out["L_GEN"] if adv else 0) + (2.0 * out["L_R"] if rec else 0)
        assert out["L_G"] == pytest.approx(expected, rel=1e-6)


def test_noise_baseline_builds_no_generator(monkeypatch):
    import srkd.distill.generator as gen

    real = gen.build_model
    monkeypatch.setattr(gen, "build_model", lambda arch, **kw: pytest.fail("built a generator") if arch == "generator"
                        else real(arch, **kw))
    m = make(inputs="noise", adversarial=False, reconstruction=False)
    assert len(m.generators) == 0 and not m.gen.optimizers
    b = m.next_batch(64)
    assert b.lr.shape == (64, 1, 12, 12)
    assert 0.4 < float(b.lr.mean()) < 0.6 and float(b.lr.min()) >= 0 and float(b.lr.max()) <= 1
    assert m.after_optimizer_step(0) == {}
    # noise at the network's input size: fed to VDSR as is, without the bicubic upscale
    m = make(inputs="noise", adversarial=False, reconstruction=False, noise_size="input")
    b = m.next_batch(2)
    assert b.lr.shape == (2, 1, 24, 24)
    loss, _ = m.training_step(b)
    with torch.no_grad():
        assert float(loss) == pytest.approx(float((m.teacher(b.lr) - m.student(b.lr)).abs().mean()), rel=1e-5)


def test_too_small_generator_is_a_config_error():
    with pytest.raises(ConfigError, match="image_size"):
        make(scales=[2, 4], image_size=24)


def test_body_split_and_the_generators_step_decay():
    assert body_split(18, 2) == [9, 18]
    assert body_split(32, 3) == [11, 22, 32]
    m = make(generator={"optim": {"lr": 1.0}, "sched": {"step_size": 10}})
    assert m.gen.schedule.lr_at(9) == 1.0 and m.gen.schedule.lr_at(10) == pytest.approx(0.1)
    m = make(generator={"optim": {"lr": 1.0}, "sched": {"milestones": [10, 20], "gamma": 0.5}})
    assert m.gen.schedule.lr_at(25) == 0.25
    # the generator's optimiser is the engine's, with DFSR's defaults (Adam 1e-5, betas (0.9, 0.999), eps 1e-8)
    group = make(generator={}).gen.optimizers[2].param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    assert Config(name="datafree").generator.optim.lr == 1e-5
    x = torch.rand(1, 1, 4, 4).expand(5, 1, 4, 4)
    assert float(pairwise_l1(x)) == 0.0  # a collapsed batch has zero diversity


@pytest.mark.parametrize("arch", ["vdsr", "edsr"])
def test_progressive_growth_keeps_previous_weights(arch):
    if arch == "vdsr":
        student, teacher, n_body = vdsr(8, 8), vdsr(16), 6
    else:
        student = build_model("edsr", scale=2, n_feats=8, n_resblocks=4)
        teacher, n_body = build_model("edsr", scale=2, n_feats=8, n_resblocks=2), 4
    m = make(student=student, teacher=teacher, progressive={"stages": [3, 5]}, image_size=24)
    assert len(m.student.body) == n_body // 2 and m.stage == 0
    assert m.begin_stage(0) is False and m.begin_stage(2) is False
    old = {k: v.clone() for k, v in m.student.state_dict().items()}
    gen = m.generators["2"]
    assert m.begin_stage(3) is True
    assert m.generators["2"] is gen  # the generator survives growth
    new = m.student.state_dict()
    assert len(m.student.body) == n_body and m.stage == 1
    assert all(torch.equal(new[k], v) for k, v in old.items())
    assert set(new) - set(old) and all(k.startswith("body.") for k in set(new) - set(old))
    assert m.student.spec.kwargs == student.spec.kwargs  # the final student is the configured one
    assert m.begin_stage(7) is False


@pytest.mark.parametrize("arch", ["vdsr", "edsr"])
@pytest.mark.parametrize("growth_init", ["random", "identity"])
def test_identity_growth_keeps_the_students_function(arch, growth_init):
    # random (the paper): the grown student computes something else; identity: exactly what it computed before
    if arch == "vdsr":
        student, teacher = vdsr(8, 8), vdsr(16)
    else:
        student, teacher = (build_model("edsr", scale=2, n_feats=8, n_resblocks=n) for n in (4, 2))
    m = make(student=student, teacher=teacher, progressive={"stages": [3, 5], "init": growth_init})
    x = torch.rand(2, 1 if arch == "vdsr" else 3, 12, 12)
    with torch.no_grad():
        before = m.student(x)
        assert m.begin_stage(3) is True
        after = m.student(x)
    if growth_init == "identity":
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    else:
        assert (after - before).abs().max() > 1e-3


def test_nonfinite_generator_loss_stops_with_the_iteration(monkeypatch):
    m = make(generator={"every": 5})
    monkeypatch.setattr(m, "reconstruction_loss", lambda *a: torch.tensor(float("nan")))
    with pytest.raises(TrainingError, match="iteration 5"):
        m.after_optimizer_step(4)
    m = make()
    m.nonfinite = NonfinitePolicy("skip", 1)  # the engine hands the method train.nonfinite / train.max_skips
    monkeypatch.setattr(m, "reconstruction_loss", lambda *a: torch.tensor(float("inf")))
    with pytest.warns(UserWarning, match="skipped"):
        assert m.after_optimizer_step(0) == {"gen_skipped": 1.0}
    with pytest.raises(TrainingError):
        m.after_optimizer_step(1)


def test_extra_state_round_trip_is_exact():
    def run(m: Method, steps: range) -> None:
        for i in steps:
            m.begin_stage(i)
            m.training_step(m.next_batch(2))
            m.after_optimizer_step(i)

    a = make(scales=[2, 3, 4], image_size=48, progressive={"stages": [2, 4]})
    run(a, range(3))
    buf = io.BytesIO()
    torch.save(a.extra_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # what the engine's checkpoint reader accepts

    b = make(scales=[2, 3, 4], image_size=48, progressive={"stages": [2, 4]})
    b.load_extra_state(state)
    assert b.stage == 1 and len(b.student.body) == len(a.student.body)
    b.student.load_state_dict(a.student.state_dict())
    run(a, range(3, 6))
    run(b, range(3, 6))
    for k in "234":
        for p, q in zip(a.generators[k].parameters(), b.generators[k].parameters()):
            assert torch.equal(p, q)
    assert torch.equal(a.next_batch(3).lr, b.next_batch(3).lr)


def test_sample_grid_shows_three_samples_per_rgb_tile():
    m = make(scales=[2, 4], image_size=48)
    grid = m.sample_grid(n=2)
    # rows: (LR enlarged, teacher SR) per scale, each tile 48 + 2 px of border; 1-channel samples as RGB
    assert grid.shape == (3, 4 * 50, 2 * 50)
    assert 0 <= float(grid.min()) and float(grid.max()) <= 1


def test_sample_grids_repeat_their_codes_and_leave_training_draws_alone():
    a, b = make(scales=[2, 4], image_size=48), make(scales=[2, 4], image_size=48)
    for m in (a, b):  # the method's stream is seeded from the global one on first use
        torch.manual_seed(5)
        m.next_batch(2)
    first = a.sample_grid(n=2)
    assert torch.equal(first, a.sample_grid(n=2))  # same codes every time: grids show the generator evolve
    assert torch.equal(a.next_batch(2).lr, b.next_batch(2).lr)  # b wrote no grid, yet draws the same batch


def test_training_step_loss_is_the_teacher_student_gap():
    m = make()
    b = Batch(torch.rand(2, 1, 12, 12))
    loss, logs = m.training_step(b)
    from srkd.models import run_sr

    with torch.no_grad():
        expected = (run_sr(m.teacher, b.lr, 2) - run_sr(m.student, b.lr, 2)).abs().mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
