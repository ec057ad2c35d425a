from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.distill.base import Batch
from srkd.distill.dukd import DUKD, DUKDConfig, random_crops
from srkd.errors import ConfigError
from srkd.models import build_model

S = 2


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return (
        build_model("edsr", scale=S, n_feats=8, n_resblocks=2),
        build_model("edsr", scale=S, n_feats=12, n_resblocks=2),
    )


def _batch(n: int = 3, h: int = 8, w: int = 8) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(torch.rand(n, 3, h, w, generator=g), torch.rand(n, 3, S * h, S * w, generator=g))


class Nearest(nn.Module):
    """An 'SR network' that commutes with every invertible augmentation; one weight so it can be a student."""

    upsample_input = False
    scale = S

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))
        self.calls: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.detach().clone())
        return F.interpolate(x, scale_factor=S, mode="nearest") * self.gain


def test_training_step_gradient_and_teacher_discipline() -> None:
    student, teacher = _pair()
    method = DUKD(student, teacher, DUKDConfig(), scale=S).train()
    loss, logs = method.training_step(_batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(logs) == {"pix", "kd", "zoom_in", "zoom_out"}
    torch.testing.assert_close(loss, 5 * logs["pix"] + logs["kd"] + logs["zoom_in"] + logs["zoom_out"])
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training and student.training


@pytest.mark.parametrize(
    ("toggles", "terms"),
    [
        ({"zoom_in": False, "zoom_out": False, "augment": False}, {"pix", "kd"}),
        ({"zoom_in": True, "zoom_out": False}, {"pix", "kd", "zoom_in"}),
        ({"zoom_in": False, "zoom_out": True}, {"pix", "kd", "zoom_out"}),
        ({"zoom_out_pix": True}, {"pix", "kd", "zoom_in", "zoom_out", "zoom_out_pix"}),
    ],
)
def test_toggles_select_terms(toggles: dict, terms: set[str]) -> None:
    student, teacher = _pair()
    loss, logs = DUKD(student, teacher, DUKDConfig(**toggles), scale=S).training_step(_batch())
    assert set(logs) == terms
    assert torch.isfinite(loss) and all(logs[t] > 0 for t in terms)


def test_teacher_runs_once_per_input_and_same_size_inputs_are_stacked() -> None:
    student, teacher = _pair()
    calls = {"s": [], "t": []}
    student.register_forward_pre_hook(lambda m, a: calls["s"].append(tuple(a[0].shape)))
    teacher.register_forward_pre_hook(lambda m, a: calls["t"].append(tuple(a[0].shape)))
    DUKD(student, teacher, DUKDConfig(zoom_in_crops=2), scale=S).training_step(_batch(3))
    # LR (3) + 2 zoom-in crops each (6) in one forward; the zoomed-out LR (4x4) in another
    assert calls["t"] == [(9, 3, 8, 8), (3, 3, 4, 4)]
    assert calls["s"] == calls["t"]


def test_augmentations_are_inverted_before_the_comparison() -> None:
    """With an SR function that commutes with the augmentations and student == teacher, every teacher term is
    exactly zero although the student really saw augmented inputs."""
    student, teacher = Nearest(), Nearest()
    cfg = DUKDConfig(augment_p=1.0, augment_on=["main", "zoom_in", "zoom_out"], zoom_in_crops=3)
    torch.manual_seed(3)
    loss, logs = DUKD(student, teacher, cfg, scale=S).training_step(_batch(4))
    assert logs["kd"] == 0 and logs["zoom_in"] == 0  # 1 - x is exact for torch.rand values
    assert logs["zoom_out"] < 1e-7  # 1 - (1 - x) rounds for bicubic values; a wrong inverse gives ~0.3
    s_in, t_in = student.calls[0], teacher.calls[0]
    assert s_in.shape == t_in.shape == (16, 3, 8, 8)
    assert not torch.equal(s_in, t_in)  # p = 1: every student input was augmented
    torch.testing.assert_close(s_in[:4].mean((1, 2, 3)), 1 - t_in[:4].mean((1, 2, 3)))  # inversion always on


def test_augmentation_toggle_and_targets() -> None:
    for cfg, same_main, same_crops in [
        (DUKDConfig(augment=False, augment_p=1.0), True, True),
        (DUKDConfig(augment_p=1.0), True, False),  # default: upcycled inputs only
        (DUKDConfig(augment_p=1.0, augment_on=["main"]), False, True),
    ]:
        student, teacher = Nearest(), Nearest()
        DUKD(student, teacher, cfg, scale=S).training_step(_batch(2))
        s_in, t_in = student.calls[0], teacher.calls[0]
        assert torch.equal(s_in[:2], t_in[:2]) == same_main
        assert torch.equal(s_in[2:], t_in[2:]) == same_crops
        assert torch.equal(student.calls[1], teacher.calls[1]) == (
            same_crops or "zoom_out" not in cfg.augment_on
        )


def test_zoom_in_crops_come_from_the_hr_patch() -> None:
    hr = torch.arange(2 * 1 * 12 * 12, dtype=torch.float32).view(2, 1, 12, 12)
    crops = random_crops(hr, (4, 4), 3, generator=torch.Generator().manual_seed(0))
    assert crops.shape == (6, 1, 4, 4)
    for m in range(6):
        i = m // 3
        first = int(crops[m, 0, 0, 0]) - i * 144
        y, x = divmod(first, 12)
        assert torch.equal(crops[m], hr[i, :, y : y + 4, x : x + 4])
    grid = random_crops(hr, (4, 4), 9, grid=True, generator=torch.Generator().manual_seed(0))
    corners = sorted(int(c) for c in grid[:9, 0, 0, 0])
    assert corners == [y * 12 + x for y in (0, 4, 8) for x in (0, 4, 8)]  # all 9 distinct tiles of sample 0
    with pytest.raises(ConfigError, match="zoom_in_crops"):
        random_crops(hr, (4, 4), 10, grid=True)


def test_zoom_out_uses_matlab_bicubic_of_the_lr() -> None:
    from srkd.ops.imresize import imresize

    student, teacher = Nearest(), Nearest()
    batch = _batch(2, 9, 8)  # 9 rows: cropped to 8 so that S(lr_down) aligns with lr
    DUKD(student, teacher, DUKDConfig(zoom_in=False, augment=False), scale=S).training_step(batch)
    expect = imresize(batch.lr[..., :8, :8], scale=1 / S).clamp(0, 1)
    torch.testing.assert_close(teacher.calls[1], expect)


def test_needs_hr_and_bf16_autocast() -> None:
    student, teacher = _pair()
    method = DUKD(student, teacher, DUKDConfig(), scale=S)
    with pytest.raises(ConfigError, match="paired"):
        method.training_step(Batch(torch.rand(1, 3, 8, 8)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = method.training_step(_batch())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
