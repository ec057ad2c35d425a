"""Exponential moving average of the student's weights (BasicSR's ``ema_decay``; DUKD uses 0.999).

The averaged copy is what gets validated and exported when EMA is on: it is smoother than the raw weights
and usually a few hundredths of a dB better at no training cost.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates: with a constant 0.999 the average
still holds 0.999**1500 = 22 % of the random initial weights after 1500 steps, so short runs (quick recipes, the
demo) would validate and export a model far worse than the one being trained.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        # Methods hook the student's inner modules to collect features (FAKD); the copy must not feed them.
        for m in self.module.modules():
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
            m._backward_hooks.clear()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state.get("updates", 0))
        self.module.load_state_dict(state["module"])
