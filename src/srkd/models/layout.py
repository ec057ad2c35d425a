"""How a published checkpoint of an architecture is recognised and loaded: one small record per key layout.

Each architecture module lists its layouts (``LAYOUTS``) beside the network, in the spirit of spandrel's
architecture packages: a marker that only that layout's keys match, a function that reads the constructor's
keyword arguments from tensor shapes, and the key renames (if srkd's names differ from the published ones).
``srkd convert`` (:mod:`srkd.checkpoint.convert`) reads files and tries these records; it knows no architecture.
Architectures added since the real-teachers work keep their published key names, so their rules are empty and a
student trained in srkd loads back into the authors' code unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from srkd.errors import CheckpointError

Rule = tuple[str, Any]  # (regex on the published key, replacement template, or None to drop the tensor)
State = dict[str, torch.Tensor]
Infer = Callable[[State], tuple[dict[str, Any], list[str]]]  # -> constructor kwargs, notes on assumptions


@dataclass(frozen=True)
class Layout:
    """One published key layout of one architecture."""

    format: str  # the ``--format`` name
    arch: str  # srkd registry name
    marker: str  # regex (fullmatch) that at least one key of this layout, and no key of any other, matches
    infer: Infer
    rules: tuple[Rule, ...] = ()
    multi_scale: bool = False  # one network for x2/x3/x4 (VDSR, CARN-M)

    @property
    def name(self) -> str:
        return self.format if self.format != "basicsr" else f"basicsr-{self.arch}"

    def matches(self, state: State) -> bool:
        return any(re.fullmatch(self.marker, k) for k in state)

    def rename(self, key: str) -> str | None:
        for pattern, repl in self.rules:
            if re.fullmatch(pattern, key):
                return None if repl is None else re.sub(pattern, repl, key)
        return key


def published_layout(
    arch: str,
    marker: str,
    infer_kwargs: Callable[[State], dict[str, Any]],
    *,
    dropped: str | None = None,
    multi_scale: bool = False,
) -> Layout:
    """The layout of an architecture whose srkd module names are the published ones (nothing renamed)."""
    return Layout(
        arch, arch, marker, lambda state: (infer_kwargs(state), []),
        ((dropped, None),) if dropped else (), multi_scale,
    )


def count_keys(state: State, pattern: str) -> int:
    return sum(1 for k in state if re.fullmatch(pattern, k))


def upsampler_scale(state: State, prefix: str, n_feats: int) -> int:
    """Scale of a pixel-shuffle upsampler: one conv per factor 2 (x2/x4/x8), or a single 9x conv for x3."""
    steps = count_keys(state, re.escape(prefix) + r"\d+\.weight")
    if steps > 1:
        return 2**steps
    ratio = state[f"{prefix}0.weight"].shape[0] // max(n_feats, 1)
    return {4: 2, 9: 3}.get(ratio, 0)


def mean_from_shift(state: State, img_range: float = 255.0) -> list[float] | None:
    """RGB mean of an EDSR-PyTorch ``sub_mean`` 1x1 conv (identity weight, bias = -range * mean); None if absent."""
    weight, bias = state.get("sub_mean.weight"), state.get("sub_mean.bias")
    if weight is None or bias is None:
        return None
    eye = torch.eye(weight.shape[0]).view_as(weight)
    if not torch.allclose(weight.float(), eye, atol=1e-6):
        raise CheckpointError("its sub_mean layer divides by a standard deviation, which srkd's models do not support")
    return [round(v, 6) for v in (-bias.double() / img_range).tolist()]


__all__ = ["Layout", "Rule", "count_keys", "mean_from_shift", "published_layout", "upsampler_scale"]
