"""``srkd bench datafree-step``: srkd's data-free round from the shipped recipe, and the published-code-style
baseline, which must do what the published DFSR code does (the rounding bicubic that gives the generator no
gradient, a teacher that is never frozen), or the ratio compares against a strawman."""

from __future__ import annotations

import json

import pytest
import torch

from srkd.bench.common import BenchOptions
from srkd.bench.datafree import (
    PublishedDFSRRound,
    SrkdDatafreeRound,
    build_student,
    generators_by_scale,
    make_teacher,
    published_bicubic,
    recipe_config,
)
from srkd.cli.main import main
from srkd.models import build_model


def tiny_baseline(steps: int = 2) -> PublishedDFSRRound:
    torch.manual_seed(0)
    student = build_model("vdsr", n_feats=4, n_layers=3)
    teacher = build_model("vdsr", n_feats=8, n_layers=4)
    gen = build_model("generator", image_size=12, channels=1, latent_dim=16)
    return PublishedDFSRRound(student, teacher, {2: gen}, batch_size=2, student_steps=steps, device=torch.device("cpu"))


def test_published_bicubic_rounds_to_8_bits_and_passes_no_gradient():
    x = torch.rand(2, 1, 12, 12, requires_grad=True)
    y = published_bicubic(x, 2)
    assert y.shape == (2, 1, 24, 24)
    assert torch.equal(y * 255, (y * 255).round())
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.count_nonzero(g) == 0


def test_baseline_student_step_carries_zero_gradients_down_to_the_generator():
    base = tiny_baseline()
    (gen,) = base.generators.values()
    before = [p.detach().clone() for p in base.student.parameters()]
    base.student_step()
    # the published backward reaches the generator (its .grad exists) but only with exact zeros
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in gen.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, base.student.parameters()))
    assert all(p.requires_grad for p in base.teacher.parameters())  # never frozen, as published


def test_baseline_generator_gets_gradient_only_from_the_reconstruction_term():
    base = tiny_baseline()
    (gen,) = base.generators.values()
    losses = base.generator_losses()
    adv = torch.autograd.grad(losses["genkd"], list(gen.parameters()), retain_graph=True, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in adv)
    rec = torch.autograd.grad(losses["recon"], list(gen.parameters()), retain_graph=True)
    assert any(torch.count_nonzero(g) > 0 for g in rec)
    before = [p.detach().clone() for p in gen.parameters()]
    base.generator_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters()))
    assert any(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in base.teacher.parameters())


def test_srkd_round_is_the_recipes_student_steps_then_one_generator_step():
    cfg = recipe_config(quick=True)
    teacher, label = make_teacher(cfg, None, quick=True)
    assert label.startswith("random vdsr")
    ours = SrkdDatafreeRound(cfg, build_student(cfg), teacher, torch.device("cpu"))
    (gen,) = generators_by_scale(ours.method, cfg.scale).values()
    start = [p.detach().clone() for p in gen.parameters()]
    ours.student_step()
    assert all(torch.equal(a, b) for a, b in zip(start, gen.parameters()))  # student steps leave G alone
    ours.step = 0
    k = ours.round()
    assert k >= 1 and ours.step == k
    assert any(not torch.equal(a, b) for a, b in zip(start, gen.parameters()))
    assert all(not p.requires_grad for p in ours.method.teacher.parameters())  # srkd freezes the teacher
    logs = ours.generator_step()
    assert logs and ours.step % k == 0


def test_datafree_step_quick(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "datafree-step", "--quick", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"]["datafree-step"]
    (row,) = result["comparisons"]
    assert row["student_steps_per_round"] == result["metrics"]["student_steps_per_round"] >= 1
    assert row["ratio"] == pytest.approx(row["baseline"]["median_s"] / row["ours"]["median_s"])
    assert result["config"]["recipe"] == "datafree-vdsr-quick"
    (t,) = result["targets"]
    assert t["target"] == 8.0 and t["op"] == ">="


def test_bench_options_reach_the_recipe():
    assert recipe_config(quick=True).data.batch_size == 2
    assert BenchOptions(quick=True).reps(default=5) == 1
