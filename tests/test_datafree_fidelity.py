"""Data-free distillation, issue 37: what each fidelity mode back-propagates, data-free upcycling, the data-trained
multi-scale control (inputs: images). Tiny random networks: every test runs in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srkd.config_base import validate
from srkd.data.images import write_image
from srkd.distill.base import Batch
from srkd.distill.datafree import Config, Method, quantize8
from srkd.errors import ConfigError
from srkd.models import build_model, run_sr
from srkd.ops.imresize import imresize


def vdsr(n_feats: int = 8, n_layers: int = 4) -> torch.nn.Module:
    return build_model("vdsr", scale=2, n_feats=n_feats, n_layers=n_layers)


def edsr(n_feats: int = 8) -> torch.nn.Module:
    return build_model("edsr", scale=2, n_feats=n_feats, n_resblocks=1)


def make(arch: str = "vdsr", **cfg) -> Method:
    cfg = {"name": "datafree", "progressive": False, "image_size": 24,
           "generator": {"every": 1, "optim": {"lr": 1e-3}, "criterion": "mse", "reduction": "sum"}, **cfg}
    torch.manual_seed(0)
    student, teacher = (vdsr(), vdsr(16)) if arch == "vdsr" else (edsr(), edsr(16))
    return Method(student, teacher, Config.model_validate(cfg), 2)


def grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    """Norm of d loss / d params; a loss with no graph to ``params`` has gradient exactly zero."""
    if not loss.requires_grad:
        return 0.0
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(sum(float(g.pow(2).sum()) for g in grads if g is not None)) ** 0.5


@pytest.mark.parametrize("arch", ["vdsr", "edsr"])
@pytest.mark.parametrize("fidelity", ["paper", "code"])
def test_what_each_fidelity_mode_back_propagates_to_the_generator(arch, fidelity):
    m = make(arch, fidelity=fidelity)
    params = list(m.generators["2"].parameters())
    losses = m.generator_losses(2, 4)
    adversarial, reconstruction = grad_norm(losses["L_GEN"], params), grad_norm(losses["L_R"], params)
    assert reconstruction > 0
    if fidelity == "code":
        assert adversarial == 0.0  # the published code: L_GEN never reaches the generator
        assert grad_norm(losses["L_G"], params) == pytest.approx(m.cfg.w_r * reconstruction, rel=1e-5)
    else:
        assert adversarial > 0
    assert torch.isfinite(losses["L_GEN"].detach()) and float(losses["L_KD_G"].detach()) > 0  # still computed, for the logs


def test_the_detached_rounding_gives_the_gradients_autograd_gives_through_round(monkeypatch):
    # The published module's round(255 x) / 255 inside the graph: torch.round's gradient is exactly zero, so the
    # detached version (which spares the backward passes through both networks) changes no gradient.
    def literal(x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255.0) / 255.0

    detached = make(fidelity="code")
    params = list(detached.generators["2"].parameters())
    torch.manual_seed(1)
    want = torch.autograd.grad(detached.generator_losses(2, 4)["L_G"], params)
    lit = make(fidelity="code")
    monkeypatch.setattr(lit, "code", False)  # paper's graph, but every network input rounded as the code does
    monkeypatch.setattr(lit, "sr", lambda model, x, s: model(literal(imresize(x, scale=s).clamp(0, 1))))
    monkeypatch.setattr(lit, "reconstruction_loss",
                        lambda lr, t, s: lit.gen_distance(literal(imresize(t.float(), scale=0.5).clamp(0, 1)), lr))
    torch.manual_seed(1)
    out = lit.generator_losses(2, 4)
    lit_params = list(lit.generators["2"].parameters())  # the same initial weights (same seed)
    assert grad_norm(out["L_GEN"], lit_params) == 0.0  # through torch.round: exact zeros
    got = torch.autograd.grad(out["L_G"], lit_params)
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_code_mode_reconstructs_against_the_rounded_fixed_point_target():
    m = make(fidelity="code")
    state = m.rng.get_state()
    losses = m.generator_losses(2, 3)
    m.rng.set_state(state)
    x = m._sample(2, 3).detach()
    up = quantize8(imresize(x, scale=2).clamp(0, 1))
    assert torch.equal(up * 255, torch.round(up * 255))  # the networks see 8-bit images
    back = quantize8(imresize(m.teacher(up), scale=0.5).clamp(0, 1))
    assert float(losses["L_R"].detach()) == pytest.approx(float(((x - back) ** 2).sum()), rel=1e-5)


def test_paper_mode_generator_losses_are_the_papers_equations():
    m = make(w_r=3.0)
    state = m.rng.get_state()
    losses = m.generator_losses(2, 3)
    m.rng.set_state(state)
    x = m._sample(2, 3)
    t, s = run_sr(m.teacher, x, 2), run_sr(m.student, x, 2)
    kd = ((t - s) ** 2).sum()
    rec = ((imresize(t, scale=0.5).clamp(0, 1) - x) ** 2).sum()
    assert float(losses["L_G"]) == pytest.approx(float(-torch.log1p(kd) + 3.0 * rec), rel=1e-6)


def test_code_mode_without_reconstruction_steps_adam_on_zero_gradients():
    m = make(fidelity="code", reconstruction=False)
    before = [p.detach().clone() for p in m.generators["2"].parameters()]
    logs = m.after_optimizer_step(0)
    assert "L_GEN" in logs
    assert all(torch.equal(a, b) for a, b in zip(before, m.generators["2"].parameters()))


@pytest.mark.parametrize("arch", ["vdsr", "edsr"])
def test_code_mode_student_step_sees_8_bit_inputs(arch):
    m = make(arch, fidelity="code")
    seen = []
    m.student.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    b = m.next_batch(2)
    loss, logs = m.training_step(b)
    assert loss.requires_grad and set(logs) == {"kd"}
    (x,) = seen
    assert torch.equal(torch.round(x * 255), x * 255)
    assert x.shape[-1] == 24  # VDSR: the 12 px LR upscaled x2; EDSR: the 24 px LR itself


def test_kd_reduction_sum_is_the_mean_times_the_values():
    a, b = make(), make(kd_reduction="sum")
    batch = Batch(torch.rand(2, 1, 12, 12))
    mean, _ = a.training_step(batch)
    total, _ = b.training_step(batch)
    assert float(total) == pytest.approx(float(mean) * 2 * 24 * 24, rel=1e-5)


# -- data-free upcycling ---------------------------------------------------------------------------------------
def student_inputs(m: Method, batch: Batch) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    seen: list[torch.Tensor] = []
    handle = m.student.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    torch.manual_seed(3)
    m.rng.manual_seed(3)
    _, logs = m.training_step(batch)
    handle.remove()
    return seen, logs


@pytest.mark.parametrize("arch", ["vdsr", "edsr"])
def test_each_upcycling_toggle_changes_what_the_student_sees_and_off_changes_nothing(arch):
    size = 12 if arch == "vdsr" else 24
    batch = Batch(torch.rand(4, 1 if arch == "vdsr" else 3, size, size))
    plain, plain_logs = student_inputs(make(arch), batch)
    off, off_logs = student_inputs(make(arch, upcycle={"zoom_in": False, "zoom_out": False, "augment": False}), batch)
    assert len(plain) == len(off) == 1 and torch.equal(plain[0], off[0]) and set(off_logs) == {"kd"}
    assert torch.equal(plain_logs["kd"], off_logs["kd"])
    for toggle in ("zoom_in", "zoom_out", "augment"):
        seen, logs = student_inputs(make(arch, upcycle={toggle: True, "augment_p": 1.0}), batch)
        changed = len(seen) != 1 or seen[0].shape != plain[0].shape or not torch.equal(seen[0], plain[0])
        assert changed, toggle
        if toggle != "augment":
            assert toggle in logs and float(logs[toggle]) > 0
    seen, logs = student_inputs(make(arch, upcycle={"zoom_in": True, "zoom_in_crops": 2}), batch)
    assert seen[0].shape[0] == 4 + 8  # the batch and its crops in one forward
    seen, logs = student_inputs(make(arch, upcycle={"zoom_out": True}), batch)
    assert [x.shape[0] for x in seen] == [4, 4]


def test_augmentation_with_probability_zero_is_the_plain_step():
    batch = Batch(torch.rand(3, 1, 12, 12))
    _, plain = student_inputs(make(), batch)
    _, aug = student_inputs(make(upcycle={"augment": True, "augment_p": 0.0}), batch)
    assert float(aug["kd"]) == pytest.approx(float(plain["kd"]), rel=1e-6)


def test_upcycled_terms_are_the_teacher_student_gap_on_the_upcycled_inputs():
    m = make(upcycle={"zoom_out": True})
    batch = Batch(torch.rand(2, 1, 12, 12))
    _, logs = m.training_step(batch)
    small = imresize(batch.lr, scale=0.5).clamp(0, 1)
    with torch.no_grad():
        want = (run_sr(m.teacher, small, 2) - run_sr(m.student, small, 2)).abs().mean()
    assert float(logs["zoom_out"]) == pytest.approx(float(want), rel=1e-5)


def test_upcycling_config_is_checked():
    with pytest.raises(ConfigError, match="unknown key"):
        validate(Config, {"name": "datafree", "progressive": False, "upcycle": {"zoom": True}})
    with pytest.raises(ConfigError, match="fidelity"):
        validate(Config, {"name": "datafree", "progressive": False, "fidelity": "published"})


# -- the data-trained multi-scale control ------------------------------------------------------------------------
@pytest.fixture()
def image_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "data-root"))  # the LR cache goes there
    folder = tmp_path / "train"
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        write_image(folder / f"im{i}.png", torch.rand(3, 60, 64, generator=gen))
    return folder


def test_images_inputs_give_real_patches_at_a_random_scale_per_batch(image_folder: Path):
    m = make(inputs="images", images=[str(image_folder)], adversarial=False, reconstruction=False,
             scales=[2, 3, 4], image_size=48)
    assert not m.generators
    sizes = set()
    for _ in range(12):
        b = m.next_batch(2)
        assert b.hr is not None and b.hr.shape[-1] == 48 and b.lr.shape[1] == 1  # Y, as VDSR takes
        sizes.add(b.lr.shape[-1])
        s = m.scale_of(b.lr)
        loss, logs = m.training_step(b)
        assert set(logs) == {"pix"}
        with torch.no_grad():
            assert float(loss) == pytest.approx(float((run_sr(m.student, b.lr, s) - b.hr).abs().mean()), rel=1e-5)
    assert sizes == {24, 16, 12}
    assert m.after_optimizer_step(0) == {}
    state = m.extra_state()
    assert state["image_batches"] == 12
    again = make(inputs="images", images=[str(image_folder)], adversarial=False, reconstruction=False,
                 scales=[2, 3, 4], image_size=48)
    again.load_extra_state(state)
    a, b = m.next_batch(2), again.next_batch(2)
    assert a.hr is not None and b.hr is not None
    assert torch.equal(a.lr, b.lr) and torch.equal(a.hr, b.hr)  # a resumed run draws the next batch


def test_images_inputs_config_errors(image_folder: Path):
    base = {"name": "datafree", "progressive": False, "adversarial": False, "reconstruction": False}
    with pytest.raises(ConfigError, match="goes with inputs: images"):
        validate(Config, {**base, "inputs": "images"})
    with pytest.raises(ConfigError, match="goes with inputs: images"):
        validate(Config, {"name": "datafree", "progressive": False, "images": ["x"]})
    with pytest.raises(ConfigError, match="has no generator"):
        validate(Config, {"name": "datafree", "progressive": False, "inputs": "images", "images": ["x"]})
    with pytest.raises(ConfigError, match="images_target: teacher"):
        validate(Config, {**base, "inputs": "images", "images": ["x"], "upcycle": {"zoom_out": True}})
    assert "image_batches" not in make().extra_state()  # other inputs' checkpoints unchanged
