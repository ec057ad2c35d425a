"""Invertible augmentations for DUKD's label-consistency term (paper Sec. 3.3).

The student sees an augmented input, its output is mapped back by the exact inverse and compared with the
teacher's output on the *un-augmented* input. An augmentation is therefore a value, :class:`Aug`, whose
:meth:`Aug.invert` undoes :meth:`Aug.apply` by construction: ``apply`` runs its ops in one fixed order
(horizontal flip, vertical flip, rotation, colour inversion) and ``invert`` runs them in the reverse order, each
replaced by its own inverse (``rot90(k)`` by ``rot90(-k)``; flips and ``1 - x`` are involutions).

Why not "apply the same ops again" (the public DUKD code)? That is only an inverse when every op is an involution
*and* the ops commute. Flips do not commute with a transpose: flip-then-transpose applied twice is a 180-degree
rotation, not the identity. With the reference sampling (each op with p = 0.3) that happens on
0.3 * (2 * 0.3 * 0.7) = 12.6% of the samples; ``tests/test_augment.py`` shows it.

All ops commute with SR up to scale (a geometric transform of the LR input is the same transform of the SR
output), which is what makes the inverted student output comparable with the teacher's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

_SPATIAL = (-2, -1)


@dataclass(frozen=True)
class Aug:
    """One composition: ``flip_h`` (mirror left-right), ``flip_v`` (upside down), ``rot`` quarter turns
    counter-clockwise (``torch.rot90`` on the last two dims; odd ``rot`` swaps H and W), ``negate`` (1 - x,
    images in [0, 1]). 2 x 2 x 4 x 2 = 32 compositions (16 distinct transforms: flip_h + flip_v == rot 2)."""

    flip_h: bool = False
    flip_v: bool = False
    rot: int = 0
    negate: bool = False

    def __post_init__(self) -> None:
        if self.rot not in (0, 1, 2, 3):
            raise ValueError(f"rot must be 0, 1, 2 or 3 quarter turns, got {self.rot}")

    @property
    def is_identity(self) -> bool:
        return not (self.flip_h or self.flip_v or self.rot or self.negate)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip_h:
            x = x.flip(-1)
        if self.flip_v:
            x = x.flip(-2)
        if self.rot:
            x = torch.rot90(x, self.rot, _SPATIAL)
        if self.negate:
            x = 1.0 - x
        return x

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        # Exactly the reverse order of apply(), each op replaced by its inverse.
        if self.negate:
            y = 1.0 - y
        if self.rot:
            y = torch.rot90(y, -self.rot, _SPATIAL)
        if self.flip_v:
            y = y.flip(-2)
        if self.flip_h:
            y = y.flip(-1)
        return y


IDENTITY = Aug()
ALL_AUGS: tuple[Aug, ...] = tuple(
    Aug(bool(h), bool(v), r, bool(n)) for h in (0, 1) for v in (0, 1) for r in range(4) for n in (0, 1)
)


def _per_group(
    x: torch.Tensor, augs: Sequence[Aug], op: Callable[[Aug, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Apply ``op(aug_i, x[i])`` for every sample, one vectorised call per distinct augmentation (<= 32)."""
    if len(augs) != x.shape[0]:
        raise ValueError(f"{len(augs)} augmentations for a batch of {x.shape[0]}")
    groups: dict[Aug, list[int]] = {}
    for i, a in enumerate(augs):
        groups.setdefault(a, []).append(i)
    if len(groups) == 1:
        return op(augs[0], x)
    if x.shape[-1] != x.shape[-2] and len({a.rot % 2 for a in groups}) > 1:
        raise ValueError(
            f"a batch of non-square images ({x.shape[-2]}x{x.shape[-1]}) cannot mix odd and even rotations "
            "(sample with odd_rotations=False)"
        )
    order = [i for idx in groups.values() for i in idx]
    parts = [op(a, x[torch.as_tensor(idx, device=x.device)]) for a, idx in groups.items()]
    inverse_order = torch.empty(len(order), dtype=torch.long)
    inverse_order[torch.as_tensor(order)] = torch.arange(len(order))
    return torch.cat(parts, 0)[inverse_order.to(x.device)]


@dataclass(frozen=True)
class BatchAug:
    """Per-sample augmentations of a batch; ``invert(apply(x)) == x`` exactly, sample by sample."""

    augs: tuple[Aug, ...]

    def __len__(self) -> int:
        return len(self.augs)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return _per_group(x, self.augs, Aug.apply)

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        return _per_group(y, self.augs, Aug.invert)

    def __add__(self, other: BatchAug) -> BatchAug:
        """Concatenation, matching ``torch.cat([a_batch, b_batch])``."""
        return BatchAug(self.augs + other.augs)

    @staticmethod
    def identity(n: int) -> BatchAug:
        return BatchAug((IDENTITY,) * n)


def sample(
    n: int, generator: torch.Generator | None = None, p: float = 0.3, odd_rotations: bool = True
) -> BatchAug:
    """Draw ``n`` independent compositions.

    Each of horizontal flip, vertical flip and colour inversion is on with probability ``p``; with probability
    ``p`` the sample is also rotated by k quarter turns, k uniform in {1, 2, 3} (only k = 2 when
    ``odd_rotations`` is False, needed for non-square batches). The default p = 0.3 is the public DUKD code's
    per-op probability (its ops: inversion, two flips, transpose; a transpose is a flip composed with rot90, so
    both draw from the same group of transforms, with slightly different weights).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability must be in [0, 1], got {p}")
    on = torch.rand(n, 4, generator=generator) < p
    if odd_rotations:
        k = torch.randint(1, 4, (n,), generator=generator)
    else:
        k = torch.full((n,), 2, dtype=torch.long)
    rot = torch.where(on[:, 2], k, torch.zeros_like(k))
    return BatchAug(
        tuple(
            Aug(bool(fh), bool(fv), int(r), bool(ng))
            for fh, fv, r, ng in zip(on[:, 0].tolist(), on[:, 1].tolist(), rot.tolist(), on[:, 3].tolist())
        )
    )


__all__ = ["ALL_AUGS", "IDENTITY", "Aug", "BatchAug", "sample"]
