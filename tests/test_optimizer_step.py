"""optimizer_step with fp16 loss scaling: a step the non-finite gate refuses leaves the scaler usable."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from srkd.data.batch import Batch
from srkd.distill.base import Method, MethodConfig
from srkd.engine.optim import optimizer_step


class Linear(Method):
    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.student(batch.lr).square().mean()
        return loss, {}


def test_a_refused_fp16_step_does_not_break_the_next_one() -> None:
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**8)
    method = Linear(nn.Linear(4, 4), None, MethodConfig(name="x"), scale=1)
    opt = torch.optim.SGD(method.student.parameters(), lr=0.1)
    batch = Batch(lr=torch.randn(8, 4), hr=None)
    before = [p.detach().clone() for p in method.student.parameters()]
    refused = optimizer_step(method, batch, opt, list(method.student.parameters()), scaler, None, gate=lambda r: False)
    assert not refused.applied
    assert all(torch.equal(a, b) for a, b in zip(before, method.student.parameters()))  # nothing applied
    applied = optimizer_step(method, batch, opt, list(method.student.parameters()), scaler, None)  # raised before
    assert applied.applied
    assert not all(torch.equal(a, b) for a, b in zip(before, method.student.parameters()))


def test_the_gate_sees_the_unscaled_gradient_norm() -> None:
    torch.manual_seed(0)
    method = Linear(nn.Linear(4, 4), None, MethodConfig(name="x"), scale=1)
    params = list(method.student.parameters())
    opt = torch.optim.SGD(params, lr=0.0)
    batch = Batch(lr=torch.randn(8, 4), hr=None)
    plain = optimizer_step(method, batch, opt, params, torch.amp.GradScaler("cpu", enabled=False), None)
    scaled = optimizer_step(method, batch, opt, params, torch.amp.GradScaler("cpu", init_scale=2.0**10), None)
    assert float(scaled.grad_norm) == pytest.approx(float(plain.grad_norm), rel=1e-6)
