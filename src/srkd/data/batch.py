"""The training batch that flows from a sampler (or a data-free method) through a method's ``training_step``."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Aligned training pair. ``lr``: (N, C, h, w); ``hr``: (N, C, s*h, s*w) or None (data-free); floats in [0, 1]."""

    lr: torch.Tensor
    hr: torch.Tensor | None = None

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=memory_format) if memory_format is not None else t

        return Batch(move(self.lr), move(self.hr))  # type: ignore[arg-type]


__all__ = ["Batch"]
