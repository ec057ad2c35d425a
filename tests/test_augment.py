from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from srkd.distill.augment import ALL_AUGS, IDENTITY, Aug, BatchAug, sample

augs = st.builds(Aug, st.booleans(), st.booleans(), st.integers(0, 3), st.booleans())


def _image(n: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=200, deadline=None)
@given(aug=augs, h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_invert_apply_is_identity_for_every_composition(aug: Aug, h: int, w: int, seed: int) -> None:
    x = _image(2, 3, h, w, seed)
    y = aug.apply(x)
    assert y.shape[-2:] == ((w, h) if aug.rot % 2 else (h, w))  # rot90 swaps H and W
    assert torch.equal(aug.invert(y), x)


def test_all_32_compositions_exhaustively_on_a_non_square_image() -> None:
    x = _image(1, 3, 4, 7, 0)
    assert len(set(ALL_AUGS)) == 32
    distinct = set()
    for aug in ALL_AUGS:
        y = aug.apply(x)
        assert torch.equal(aug.invert(y), x), aug
        distinct.add((tuple(y.shape), y.flatten().tolist().__repr__()))
    assert len(distinct) == 16  # flip_h + flip_v == rot 180: 16 distinct transforms, all exactly invertible


@settings(max_examples=100, deadline=None)
@given(aug=augs, h=st.integers(1, 6), w=st.integers(1, 6), s=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_sr_equivariance_with_a_geometry_commuting_sr(aug: Aug, h: int, w: int, s: int, seed: int) -> None:
    """Nearest upsampling commutes with flips, rotations and 1 - x, so the inverted output equals f(x) exactly."""

    def f(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=s, mode="nearest")

    x = _image(2, 3, h, w, seed)
    assert torch.equal(aug.invert(f(aug.apply(x))), f(x))


def test_batch_aug_per_sample_and_gradient() -> None:
    x = _image(64, 3, 5, 5, 1).requires_grad_(True)
    batch_aug = sample(64, torch.Generator().manual_seed(3), p=0.5)
    assert len({a for a in batch_aug.augs}) > 8  # really per-sample
    y = batch_aug.apply(x)
    for i, a in enumerate(batch_aug.augs):  # sample i got exactly its own augmentation
        assert torch.equal(y[i], a.apply(x[i : i + 1])[0])
    back = batch_aug.invert(y)
    assert torch.equal(back, x)
    (back * torch.arange(back.numel()).view_as(back)).sum().backward()
    # the augmentation is a permutation, exactly undone: gradients come back to their own pixels
    assert torch.equal(x.grad, torch.arange(x.numel(), dtype=x.dtype).view_as(x))


def test_batch_aug_non_square_needs_even_rotations() -> None:
    x = _image(32, 3, 4, 6, 2)
    mixed = BatchAug((Aug(rot=1), Aug(rot=2)) + (IDENTITY,) * 30)
    with pytest.raises(ValueError, match="non-square"):
        mixed.apply(x)
    safe = sample(32, torch.Generator().manual_seed(0), p=0.9, odd_rotations=False)
    assert all(a.rot in (0, 2) for a in safe.augs)
    assert torch.equal(safe.invert(safe.apply(x)), x)


def test_sample_probability_and_identity() -> None:
    b = sample(20000, torch.Generator().manual_seed(0), p=0.3)
    flips = sum(a.flip_h for a in b.augs) / 20000
    rots = [a.rot for a in b.augs if a.rot]
    assert abs(flips - 0.3) < 0.02
    assert abs(len(rots) / 20000 - 0.3) < 0.02 and set(rots) == {1, 2, 3}
    assert all(a.is_identity for a in sample(50, p=0.0).augs)
    assert BatchAug.identity(3).apply(torch.ones(3, 1, 2, 2)).equal(torch.ones(3, 1, 2, 2))
    with pytest.raises(ValueError):
        sample(3, p=1.5)


# -- the reference code's inverse, for contrast -------------------------------------------------------------
REF_P = 0.3


def _ref_ops(x: torch.Tensor, ops: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """The public DUKD op set applied in its order: inversion, flip H axis, flip W axis, transpose."""
    i, h, v, t = ops
    if i:
        x = 1.0 - x
    if h:
        x = x.flip(-2)
    if v:
        x = x.flip(-1)
    if t:
        x = x.transpose(-2, -1)
    return x


def test_naive_reapply_inverse_fails_on_12_6_percent_while_ours_is_exact() -> None:
    x = _image(1, 3, 6, 6, 5)
    failing_mass = 0.0
    for ops in itertools.product((False, True), repeat=4):
        prob = 1.0
        for on in ops:
            prob *= REF_P if on else 1 - REF_P
        forward = _ref_ops(x, ops)
        naive_back = _ref_ops(forward, ops)  # "apply the same ops again"
        if not torch.equal(naive_back, x):
            failing_mass += prob
            assert ops[3] and ops[1] != ops[2]  # transpose with exactly one flip: the 180-degree error
        # every reference composition is one of our Augs, and ours inverts it exactly
        ours = [a for a in ALL_AUGS if a.apply(x).equal(forward)]
        assert ours, ops
        assert all(a.invert(forward).equal(x) for a in ours)
    assert failing_mass == pytest.approx(0.126)
