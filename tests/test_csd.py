"""CSD tests. The VGG19 here has RANDOM weights (no network access, no ImageNet file in the repo): they check the
loss mechanics, not the paper's numbers."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from srkd.distill.base import Batch
from srkd.distill.csd import CSD, CSDConfig, summed_l1_to_negatives
from srkd.distill.vgg import VGG19Features, sha256_file
from srkd.errors import CheckpointError, ConfigError
from srkd.models import build_model


@pytest.fixture(autouse=True)
def _quiet_random_vgg():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="CSD: no VGG19 weights")
        yield


def _edsr(scale: int, n_feats: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("edsr", scale=scale, n_feats=n_feats, n_resblocks=2)


def _lr(n: int = 3, size: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _kill_channels_beyond(model: torch.nn.Module, c: int, r2: int) -> None:
    """Zero every weight that touches a channel >= c, so the full network computes exactly its c-wide part.

    Upsampler convs keep output rows [:c * r^2]: PixelShuffle makes channel k from rows k*r^2 ... k*r^2+r^2-1.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "upsample" in name:
                p[c * r2 :] = 0
                if p.dim() == 4:
                    p[:, c:] = 0
            elif name.startswith("head"):
                p[c:] = 0
            elif name.startswith("tail.conv_last") and p.dim() == 4:
                p[:, c:] = 0
            elif not name.startswith("tail"):
                p[c:] = 0
                if p.dim() == 4:
                    p[:, c:] = 0


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_slim_branch_is_a_true_subnetwork_and_extract_matches(scale: int) -> None:
    full = _edsr(scale)
    method = CSD(full, None, CSDConfig(width=0.25), scale=scale)
    assert method.slim_feats == 2
    x = _lr()
    slim_out = method.slim_sr(x)
    assert slim_out.shape == (3, 3, 6 * scale, 6 * scale)
    student = method.extract_student()
    assert student.head.out_channels == 2 and sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in full.parameters()
    )
    torch.testing.assert_close(student(x), slim_out, atol=1e-6, rtol=1e-6)
    # the slim branch equals the full network with all channels >= c switched off (independent of slicing code)
    dead = _edsr(scale)
    dead.load_state_dict(full.state_dict())
    _kill_channels_beyond(dead, 2, 9 if scale == 3 else 4)
    torch.testing.assert_close(dead(x), slim_out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full(x), slim_out, atol=1e-3)


def test_extract_student_from_an_ema_copy() -> None:
    full = _edsr(2)
    method = CSD(full, None, CSDConfig(width=0.5), scale=2)
    ema = copy.deepcopy(full)
    with torch.no_grad():
        ema.head.weight.mul_(0.5)
    got = method.extract_student(ema)
    assert got.spec.kwargs["n_feats"] == 4
    torch.testing.assert_close(got.head.weight, ema.head.weight[:4])
    assert not torch.equal(got.head.weight, method.extract_student().head.weight)


def test_slim_gradient_touches_only_the_prefix() -> None:
    full = _edsr(2)
    method = CSD(full, None, CSDConfig(width=0.5), scale=2)
    method.slim_sr(_lr()).square().mean().backward()
    g = full.body[0].conv1.weight.grad
    assert g[:4, :4].abs().sum() > 0
    assert g[4:].abs().sum() == 0 and g[:, 4:].abs().sum() == 0
    up = full.tail.upsample[0].weight.grad
    assert up[: 4 * 4].abs().sum() > 0 and up[4 * 4 :].abs().sum() == 0


def test_training_step_trains_both_branches() -> None:
    full = _edsr(2)
    method = CSD(full, None, CSDConfig(num_neg=2), scale=2).train()
    assert CSD.needs_teacher is False and method.teacher is None
    batch = Batch(_lr(4, 8), torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    neg = method.negatives(batch.lr)
    assert neg.shape == (2, 3, 16, 16)
    loss, logs = method.training_step(batch)
    assert set(logs) == {"teacher_pix", "pix", "contrast"}
    assert torch.isfinite(loss) and logs["contrast"] > 0
    torch.testing.assert_close(loss, logs["teacher_pix"] + logs["pix"] + 200 * logs["contrast"])
    loss.backward()
    w = full.body[0].conv1.weight.grad
    assert w[:2, :2].abs().sum() > 0 and w[2:].abs().sum() > 0  # slim part and full-width part
    assert all(p.grad is None for p in method.vgg.parameters())
    assert set(map(id, method.trainable_parameters())) == {
        id(p) for p in full.parameters() if p.requires_grad
    }
    assert not method.vgg.training


def test_contrast_weight_zero_is_the_ablation_without_vgg() -> None:
    """lambda = 0 leaves the two HR losses: no VGG19 is built (so no random-weight warning) and none runs."""
    full = _edsr(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method = CSD(full, None, CSDConfig(contrast_weight=0.0), scale=2).train()
    assert method.vgg is None
    batch = Batch(_lr(4, 8), torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    loss, logs = method.training_step(batch)
    assert set(logs) == {"teacher_pix", "pix"}
    torch.testing.assert_close(loss, logs["teacher_pix"] + logs["pix"])
    loss.backward()
    assert full.body[0].conv1.weight.grad[:2, :2].abs().sum() > 0


def test_contrastive_term_detaches_teacher_by_default() -> None:
    full = _edsr(2)
    x = _lr(size=8)
    for detach in (True, False):
        method = CSD(full, None, CSDConfig(detach_teacher=detach), scale=2)
        full.zero_grad()
        fake_student = torch.rand(3, 3, 16, 16, requires_grad=True)
        method.contrastive(method.student_sr(x), fake_student, method.negatives(x)).backward()
        assert fake_student.grad.abs().sum() > 0
        g = full.body[0].conv1.weight.grad
        assert (g is None or g.abs().sum() == 0) == detach


def test_init_from_teacher_and_mismatch() -> None:
    full, teacher = _edsr(2, seed=0), _edsr(2, seed=5)
    CSD(full, teacher, CSDConfig(), scale=2)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), teacher.state_dict().values()))
    with pytest.raises(ConfigError, match="student's architecture"):
        CSD(_edsr(2), _edsr(2, n_feats=16), CSDConfig(), scale=2)


def test_vgg_shapes_modes_and_random_weight_warning() -> None:
    with pytest.warns(UserWarning, match="RANDOM VGG"):
        vgg = VGG19Features()
    x = torch.rand(2, 3, 32, 32)
    feats = vgg(x)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
        (512, 2, 2),
    ]
    assert all((f >= 0).all() for f in feats)  # post-ReLU taps
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    raw = VGG19Features(input_mode="raw255")
    raw.load_state_dict(vgg.state_dict())
    first = vgg.features[0]
    expect_raw = torch.relu(first(x * 255))
    expect_norm = torch.relu(first((x - vgg.mean) / vgg.std))
    torch.testing.assert_close(raw(x)[0], expect_raw)
    torch.testing.assert_close(vgg(x)[0], expect_norm)
    assert vgg(torch.rand(1, 1, 16, 16))[0].shape == (1, 64, 16, 16)  # Y images are replicated to 3 channels


def test_vgg_loads_torchvision_naming_and_checks_sha256(tmp_path) -> None:
    src = VGG19Features()
    state = {f"features.{k}": v.clone() for k, v in src.features.state_dict().items()}
    # layers past relu5_1 and the classifier are ignored
    state["features.30.weight"] = torch.zeros(512, 512, 3, 3)
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    digest = sha256_file(path)
    loaded = VGG19Features(path, sha256=digest)
    x = torch.rand(1, 3, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(loaded(x), src(x)))
    with pytest.raises(CheckpointError, match="sha256"):
        VGG19Features(path, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="not found"):
        VGG19Features(tmp_path / "nope.pth")
    del state["features.28.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="features.28.weight"):
        VGG19Features(path)


def test_contrastive_value_matches_the_formula() -> None:
    method = CSD(_edsr(2), None, CSDConfig(), scale=2)
    g = torch.Generator().manual_seed(4)
    t, s, neg = (torch.rand(k, 3, 16, 16, generator=g) for k in (3, 3, 2))
    ft, fs, fn = method.vgg(t), method.vgg(s), method.vgg(neg)
    expect = sum(
        w * (a - b).abs().mean() / (sum((c[j] - b).abs().mean() for j in range(2)) + 1e-7)
        for w, a, b, c in zip([1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0], ft, fs, fn)
    )
    torch.testing.assert_close(method.contrastive(t, s, neg), expect, rtol=1e-5, atol=0)
    # the teacher side detached or not, the value is the same
    method.cfg.detach_teacher = False
    torch.testing.assert_close(method.contrastive(t, s, neg), expect, rtol=1e-5, atol=0)


def test_summed_l1_to_negatives_matches_the_loop_in_value_and_gradient() -> None:
    """The cdist form of the contrastive denominator against the formula's loop over negatives, in float64."""
    g = torch.Generator().manual_seed(7)
    f_s = torch.rand(4, 5, 6, 7, generator=g, dtype=torch.float64).requires_grad_()
    f_n = torch.rand(3, 5, 6, 7, generator=g, dtype=torch.float64)
    loop = sum((f_n[j : j + 1] - f_s).abs().mean() for j in range(3))
    (g_loop,) = torch.autograd.grad(loop, f_s)
    fast = summed_l1_to_negatives(f_s, f_n)
    (g_fast,) = torch.autograd.grad(fast, f_s)
    torch.testing.assert_close(fast, loop, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_fast, g_loop, rtol=1e-12, atol=1e-15)
