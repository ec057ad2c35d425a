from __future__ import annotations

import pytest
import torch

from srkd.distill.base import Batch
from srkd.distill.fakd import FAKD, FAKDConfig, affinity_l1, spatial_affinity
from srkd.models import build_model


def _feats(n: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_spatial_affinity_is_cosine_and_channel_free() -> None:
    f = _feats(2, 5, 3, 4, 0)
    a = spatial_affinity(f)
    assert a.shape == (2, 12, 12)
    v = f.flatten(2)
    expect = torch.nn.functional.cosine_similarity(v[:, :, :, None], v[:, :, None, :], dim=1)
    torch.testing.assert_close(a, expect, atol=1e-5, rtol=0)
    # scaling the channel vectors (or using another channel count) does not change the affinity's shape or range
    assert spatial_affinity(_feats(2, 17, 3, 4, 1)).shape == a.shape
    torch.testing.assert_close(spatial_affinity(f * 3.0), a, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_elements", [1, 2 * 20 * 5, 2 * 20 * 7, 10_000])  # 1, 5, 7 rows, all at once
def test_chunked_loss_equals_the_full_matrix(chunk_elements: int) -> None:
    fs = _feats(2, 6, 4, 5, 2).requires_grad_(True)
    ft = _feats(2, 9, 4, 5, 3)
    ref = (spatial_affinity(fs) - spatial_affinity(ft)).abs().mean()
    (g_ref,) = torch.autograd.grad(ref, fs)
    got = affinity_l1(fs, ft, max_positions=10_000, chunk_elements=chunk_elements)
    (g_got,) = torch.autograd.grad(got, fs)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_got, g_ref, atol=1e-7, rtol=1e-4)
    assert g_got.abs().sum() > 0


def test_position_subsampling_uses_the_same_positions_for_both() -> None:
    fs, ft = _feats(2, 4, 6, 6, 4), _feats(2, 8, 6, 6, 5)
    got = affinity_l1(fs, ft, max_positions=10, chunk_elements=60, generator=torch.Generator().manual_seed(7))
    keep = torch.randperm(36, generator=torch.Generator().manual_seed(7))[:10]

    def sub(f: torch.Tensor) -> torch.Tensor:
        return f.flatten(2)[:, :, keep].unsqueeze(-1)

    ref = (spatial_affinity(sub(fs)) - spatial_affinity(sub(ft))).abs().mean()
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    # identical features give zero loss: teacher and student are subsampled at the same positions
    assert affinity_l1(fs, fs, max_positions=10).item() == pytest.approx(0.0, abs=1e-7)


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = build_model("edsr", scale=2, n_feats=12, n_resblocks=3)
    student = build_model("edsr", scale=2, n_feats=8, n_resblocks=3)
    return student, teacher


def _batch() -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 16, 16, generator=g))


def test_training_step_and_teacher_discipline() -> None:
    student, teacher = _pair()
    method = FAKD(student, teacher, FAKDConfig(), scale=2).train()
    assert method.student_taps == ["body.0", "body.1", "body.2"]
    loss, logs = method.training_step(_batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(logs) == {"pix", "kd", "feature"} and logs["feature"] > 0
    torch.testing.assert_close(loss, 0.5 * logs["pix"] + 0.5 * logs["kd"] + 10 * logs["feature"])
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training and student.training


def test_feature_term_gradient_reaches_the_student_body() -> None:
    """The DUKD repository's FAKD term is detached (zero gradient); ours must train the body."""
    student, teacher = _pair()
    batch = _batch()

    def body_grad(weight: float) -> torch.Tensor:
        student.zero_grad()
        loss, _ = FAKD(student, teacher, FAKDConfig(feature_weight=weight), scale=2).training_step(batch)
        loss.backward()
        return student.body[0].conv1.weight.grad.clone()

    feature_grad = body_grad(10.0) - body_grad(0.0)  # gradient of the feature term alone
    assert feature_grad.abs().max() > 1e-6
    assert torch.isfinite(feature_grad).all()


def test_fakd_under_bf16_autocast() -> None:
    student, teacher = _pair()
    method = FAKD(student, teacher, FAKDConfig(), scale=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = method.training_step(_batch())
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and logs["feature"] > 0


def test_no_affinity_sized_tensor_is_saved_for_backward() -> None:
    """The memory bound: whether the matrix comes in one slab or several, autograd keeps (N, P, C)-sized tensors
    (features, the gradient computed in the forward), never a P x P block."""
    fs, ft = _feats(2, 8, 20, 20, 6).requires_grad_(True), _feats(2, 8, 20, 20, 7)
    p = 400
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    for chunk_elements in (2 * p * 10, 2**27):  # 10 rows a slab; the default (two slabs: MIN_SLABS)
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            affinity_l1(fs, ft, chunk_elements=chunk_elements)
        assert saved and max(saved) <= 2 * p * 16  # the (N, P, Cs + Ct) features at most


def reference_affinity_l1(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """The loss as the paper writes it, by plain autograd: the full cosine-similarity matrices, their difference,
    mean absolute value (what srkd computed before the slab/symmetry/eager-gradient formulation)."""
    def sa(f: torch.Tensor) -> torch.Tensor:
        v = f.float().flatten(2)
        v = v / (v.norm(dim=1, keepdim=True) + 1e-7)
        return v.transpose(1, 2) @ v

    return (sa(fs) - sa(ft.detach())).abs().mean()


@pytest.mark.parametrize("shape_s, shape_t", [((2, 6, 4, 5), (2, 9, 4, 5)), ((3, 16, 7, 9), (3, 64, 7, 9)),
                                              ((1, 4, 1, 3), (1, 4, 1, 3))])
@pytest.mark.parametrize("chunk_elements", [1, 97, 2**27])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # taps under autocast come as bf16
def test_loss_and_gradient_match_the_plain_formulation(shape_s, shape_t, chunk_elements, dtype) -> None:
    fs = _feats(*shape_s, 11).to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ft = _feats(*shape_t, 12).to(dtype).contiguous(memory_format=torch.channels_last)
    ref = reference_affinity_l1(fs, ft)
    (g_ref,) = torch.autograd.grad(ref, fs)
    got = affinity_l1(fs, ft, max_positions=10_000, chunk_elements=chunk_elements)
    (g_got,) = torch.autograd.grad(got * 3.0, fs)  # the incoming gradient scales the saved one
    assert got.dtype == torch.float32 and g_got.dtype == dtype
    torch.testing.assert_close(got, ref, atol=1e-7, rtol=1e-5)
    # a bf16 leaf gets its gradient rounded to bf16: both sides within one bf16 step (2^-8 relative)
    torch.testing.assert_close(g_got, 3.0 * g_ref, atol=1e-6, rtol=1e-4 if dtype == torch.float32 else 2**-7)
    with torch.no_grad():  # no gradient wanted: the same value, computed without one
        torch.testing.assert_close(affinity_l1(fs, ft, 10_000, chunk_elements), got, atol=1e-7, rtol=1e-6)


def test_loss_matches_at_the_profiled_size() -> None:
    """FAKD's real tap (batch 16 at LR 48 would be slow here: batch 2): two slabs, sum over 1e7 entries."""
    fs = _feats(2, 16, 48, 48, 13).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ft = _feats(2, 64, 48, 48, 14).contiguous(memory_format=torch.channels_last)
    ref = reference_affinity_l1(fs, ft)
    (g_ref,) = torch.autograd.grad(ref, fs)
    got = affinity_l1(fs, ft)
    (g_got,) = torch.autograd.grad(got, fs)
    torch.testing.assert_close(got, ref, atol=0, rtol=1e-5)
    torch.testing.assert_close(g_got, g_ref, atol=1e-8, rtol=1e-4)
