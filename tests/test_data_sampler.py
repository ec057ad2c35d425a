"""Patch sampler: LR/HR alignment by construction, determinism by (seed, step, rank), DDP slices, speed."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from srkd.data import sampler as sampler_mod
from srkd.data.images import write_image
from srkd.data.sampler import PatchSampler, load_training_images, load_training_pairs, load_training_set
from srkd.errors import DataError


def _img(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def _box_make_lr(hr: torch.Tensor, scale: int, name: str | None = None):
    """An exact degradation for alignment tests: LR pixel = mean of its HR block (integer when blocks are flat)."""
    h, w = hr.shape[1] - hr.shape[1] % scale, hr.shape[2] - hr.shape[2] % scale
    hr = hr[:, :h, :w]
    return hr, F.avg_pool2d(hr[None].float(), scale)[0].round().to(torch.uint8)


def _blocky(h_lr: int, w_lr: int, scale: int, seed: int) -> torch.Tensor:
    """HR image constant on every scale x scale block: its box-downscale is known exactly."""
    return _img(h_lr, w_lr, seed).repeat_interleave(scale, 1).repeat_interleave(scale, 2)


def _group(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of a square, generated independently of the sampler (rot90 and one mirror)."""
    return [torch.rot90(m, k, (-2, -1)) for m in (x, x.flip(-1)) for k in range(4)]


def _which(x: torch.Tensor, ref: torch.Tensor) -> int:
    matches = [i for i, g in enumerate(_group(ref)) if torch.equal(g, x)]
    assert matches, "patch is not a flip/rotation of its source window"
    return matches[0]


def _assert_aligned(batch, scale: int) -> None:
    lr_from_hr = F.avg_pool2d(batch.hr * 255, scale).round() / 255
    assert torch.equal(lr_from_hr, batch.lr)


def test_patches_are_aligned_and_augmented_identically(monkeypatch):
    monkeypatch.setattr(sampler_mod, "make_lr", _box_make_lr)
    images = [_blocky(30, 40, 3, i) for i in range(4)]
    s = PatchSampler(images, 3, lr_patch=8, batch_size=32, seed=1)
    for step in range(5):
        b = s.batch(step)
        assert b.lr.shape == (32, 3, 8, 8) and b.hr.shape == (32, 3, 24, 24)
        assert b.lr.dtype == b.hr.dtype == torch.float32 and 0 <= b.lr.min() and b.hr.max() <= 1
        _assert_aligned(b, 3)


@settings(max_examples=25, deadline=None)
@given(
    scale=st.integers(2, 4),
    h=st.integers(6, 20),
    w=st.integers(6, 20),
    p=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    step=st.integers(0, 10**9),
)
def test_alignment_property(scale, h, w, p, seed, step):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampler_mod, "make_lr", _box_make_lr)
        s = PatchSampler([_blocky(h, w, scale, seed % 1000)], scale, lr_patch=p, batch_size=4, seed=seed)
    b = s.batch(step)
    _assert_aligned(b, scale)
    # and the LR patch really is the window the draws name, up to the dihedral op
    idx, top, left, ops = s.draws(step)
    for k in range(4):
        window = s._lr[idx[k]][:, top[k] : top[k] + p, left[k] : left[k] + p]
        _which((b.lr[k] * 255).round().to(torch.uint8), window)


def test_real_degradation_keeps_alignment_approximately():
    # smooth image: bicubic LR ~ box-downscaled HR away from patch borders
    y, x = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 120), indexing="ij")
    smooth = torch.stack([y, x, (x + y) / 2]).mul(255).round().to(torch.uint8)
    s = PatchSampler([smooth], 2, lr_patch=12, batch_size=8, seed=3)
    b = s.batch(0)
    err = (F.avg_pool2d(b.hr, 2) - b.lr)[..., 1:-1, 1:-1].abs().max()
    assert err < 3 / 255


def test_augmentation_covers_the_dihedral_group():
    images = [_img(64, 64, i) for i in range(3)]
    plain = PatchSampler(images, 2, lr_patch=16, batch_size=64, augment=False, seed=7)
    aug = PatchSampler(images, 2, lr_patch=16, batch_size=64, augment=True, seed=7)
    bp, ba = plain.batch(5), aug.batch(5)
    seen = set()
    for k in range(64):  # same crops as without augmentation, each under one symmetry, the same for LR and HR
        which = _which(ba.hr[k], bp.hr[k])
        assert torch.equal(_group(bp.lr[k])[which], ba.lr[k])
        seen.add(which)
    assert seen == set(range(8))


def test_pure_function_of_seed_step_rank():
    images = [_img(50, 60, i) for i in range(3)]
    a = PatchSampler(images, 2, lr_patch=10, batch_size=4, seed=11)
    b = PatchSampler(images, 2, lr_patch=10, batch_size=4, seed=11)
    for step in (0, 1, 1000, 123456789):
        assert torch.equal(a.batch(step).hr, b.batch(step).hr)
    b.batch(3)  # calling order does not matter (resume from any step)
    assert torch.equal(a.batch(2).lr, b.batch(2).lr)
    assert not torch.equal(a.batch(0).lr, a.batch(1).lr)
    c = PatchSampler(images, 2, lr_patch=10, batch_size=4, seed=12)
    assert not torch.equal(a.batch(0).lr, c.batch(0).lr)


def test_ranks_take_disjoint_slices_of_the_global_batch():
    images = [_img(80, 80, i) for i in range(5)]
    single = PatchSampler(images, 2, lr_patch=8, batch_size=12, seed=4).batch(9)
    parts = [PatchSampler(images, 2, lr_patch=8, batch_size=4, seed=4, rank=r, world_size=3).batch(9)
             for r in range(3)]
    assert not torch.equal(parts[0].lr, parts[1].lr) and not torch.equal(parts[1].lr, parts[2].lr)
    assert torch.equal(torch.cat([p.lr for p in parts]), single.lr)
    assert torch.equal(torch.cat([p.hr for p in parts]), single.hr)
    with pytest.raises(DataError, match="rank 3"):
        PatchSampler(images, 2, rank=3, world_size=3)


def test_small_images_skipped_with_one_warning():
    images = [_img(100, 100), _img(20, 300, 1), _img(99, 99, 2), _img(1, 1, 3)]
    with pytest.warns(UserWarning) as record:
        s = PatchSampler(images, 2, lr_patch=50, names=["big", "thin", "almost", "dot"])
    assert len(record) == 1
    msg = str(record[0].message)
    assert "skipped 3 image(s)" in msg and "thin (300x20)" in msg and "dot (1x1)" in msg
    assert len(s) == 1
    with pytest.raises(DataError, match="no training image is at least 96x96"), pytest.warns(UserWarning):
        PatchSampler([_img(40, 40)], 2, lr_patch=48)


def test_y_mode():
    white = torch.full((3, 40, 40), 255, dtype=torch.uint8)
    b = PatchSampler([white], 2, lr_patch=8, batch_size=2, colour="y").batch(0)
    assert b.lr.shape == (2, 1, 8, 8) and b.hr.shape == (2, 1, 16, 16)
    assert torch.allclose(b.hr, torch.full_like(b.hr, 235 / 255))  # Y of white is 235 (16-235 range)


def test_batch_is_fast():
    images = [_img(256, 256, i) for i in range(4)]
    s = PatchSampler(images, 4, lr_patch=48, batch_size=16, seed=0)
    s.batch(0)
    t0 = time.perf_counter()
    for step in range(20):
        s.batch(step)
    per_batch = (time.perf_counter() - t0) / 20
    print(f"PatchSampler.batch(16, x4, 48): {per_batch * 1e3:.2f} ms")
    assert per_batch < 0.05  # a CPU training step is ~0.5 s


def test_load_training_images_from_folders(tmp_path):
    for i in range(3):
        write_image(tmp_path / "A" / f"{i}.png", _img(10 + i, 12, i))
    write_image(tmp_path / "B" / "HR" / "x.png", _img(9, 9))
    named = load_training_set([str(tmp_path / "A"), str(tmp_path / "B")])
    assert [n for n, _ in named] == ["A/0", "A/1", "A/2", "B/x"]
    images = load_training_images([str(tmp_path / "A")])
    assert [tuple(t.shape) for t in images] == [(3, 10, 12), (3, 11, 12), (3, 12, 12)]
    assert all(t.dtype == torch.uint8 for t in images)
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_training_images(["nope"], tmp_path)


def test_samples_train_feeds_the_sampler():
    named = load_training_set(["samples-train"])
    assert len(named) == 6
    s = PatchSampler([t for _, t in named], 2, lr_patch=24, batch_size=4, names=[n for n, _ in named])
    assert len(s) == 6 and s.batch(0).hr.shape == (4, 3, 48, 48)


def test_load_training_pairs_caches_lr_for_the_sampler(tmp_path):
    for i, (h, w) in enumerate([(60, 70), (50, 50), (1, 1)]):
        write_image(tmp_path / "T" / f"{i}.png", _img(h, w, i))
    pairs = load_training_pairs([str(tmp_path / "T")], 2, cache_dir=tmp_path / "cache")
    assert [n for n, _, _ in pairs] == ["T/0", "T/1", "T/2"]
    assert pairs[2][2] is None  # smaller than the scale: left to the sampler to skip
    assert len(list((tmp_path / "cache" / "T" / "X2").glob("*.png"))) == 2
    with pytest.warns(UserWarning, match=r"T/2 \(1x1\)"):
        s = PatchSampler([hr for _, hr, _ in pairs], 2, lr_patch=20, batch_size=4,
                         names=[n for n, _, _ in pairs], lr_images=[lr for _, _, lr in pairs])
    ref = PatchSampler([hr for _, hr, _ in pairs[:2]], 2, lr_patch=20, batch_size=4)
    assert torch.equal(s.batch(3).lr, ref.batch(3).lr) and torch.equal(s.batch(3).hr, ref.batch(3).hr)
    with pytest.raises(DataError, match="does not fit"):
        PatchSampler([_img(60, 60)], 2, lr_patch=20, lr_images=[_img(31, 30)])
