"""The CPU teacher forward in chunks (``MethodBase.teacher_sr``): sizes, same targets and losses, FAKD exempt."""

from __future__ import annotations

import pytest
import torch

import srkd.distill.base as base
from srkd.distill.base import Batch, teacher_chunk
from srkd.distill.dukd import DUKD, DUKDConfig
from srkd.distill.fakd import FAKD, FAKDConfig
from srkd.models import build_model


def test_chunk_sizes_follow_the_patch_and_the_value_size():
    lr = torch.zeros(32, 3, 48, 48)
    assert teacher_chunk(lr) == 2  # fp32 at LR 48, as measured best with AVX2 kernels
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert teacher_chunk(lr) == 4  # bf16 values are half the bytes
        assert teacher_chunk(torch.zeros(32, 3, 96, 96)) == 1
        assert teacher_chunk(torch.zeros(32, 3, 24, 24)) == 16
    assert teacher_chunk(torch.zeros(32, 3, 4000, 4000)) == 1  # never zero
    assert teacher_chunk(torch.zeros(32, 3, 48, 48, device="meta")) == 32  # off the CPU: the whole batch


def _pair(scale: int = 2):
    torch.manual_seed(0)
    return (build_model("edsr", scale=scale, n_feats=8, n_resblocks=3),
            build_model("edsr", scale=scale, n_feats=12, n_resblocks=3))


def _batch(n: int = 5, h: int = 12) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(torch.rand(n, 3, h, h, generator=g), torch.rand(n, 3, 2 * h, 2 * h, generator=g))


@pytest.fixture
def tiny_chunks(monkeypatch):
    """A budget of two 12x12 fp32 samples per teacher forward."""
    monkeypatch.setattr(base, "TEACHER_CHUNK_BYTES", 2 * 12 * 12 * 4)


def _losses(method_cls, cfg, batch, seed=3):
    student, teacher = _pair()
    calls = []
    teacher.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    method = method_cls(student, teacher, cfg, scale=2).train()
    torch.manual_seed(seed)
    loss, logs = method.training_step(batch)
    return loss, logs, calls


def test_dukd_targets_are_the_same_in_chunks(tiny_chunks, monkeypatch):
    cfg, batch = DUKDConfig(zoom_in_crops=1), _batch(5)
    chunked, chunked_logs, calls = _losses(DUKD, cfg, batch)
    assert calls[:5] == [2, 2, 2, 2, 2]  # LR (5) + zoom-in crops (5) stacked, two samples a forward
    monkeypatch.setattr(base, "TEACHER_CHUNK_BYTES", 10**12)
    whole, whole_logs, calls = _losses(DUKD, cfg, batch)
    assert calls == [10, 5]
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-7)
    for key in whole_logs:
        torch.testing.assert_close(chunked_logs[key], whole_logs[key], rtol=1e-6, atol=1e-7)


def test_fakd_keeps_one_teacher_forward_for_its_feature_taps(tiny_chunks, monkeypatch):
    cfg, batch = FAKDConfig(), _batch(5)
    chunked, _, calls = _losses(FAKD, cfg, batch)
    assert calls == [5]  # hooks keep the last forward's features: a chunked teacher would lose all but 1 sample
    monkeypatch.setattr(base, "TEACHER_CHUNK_BYTES", 10**12)
    whole, _, _ = _losses(FAKD, cfg, batch)
    torch.testing.assert_close(chunked, whole)
