"""Minimal reproduction of the wrong output that made srkd reject inductor's ``freezing`` (benchmarks/README.md).

EDSR's forward scales its residual branch (``* res_scale``) and divides the output by ``img_range``; under
``torch._inductor.config.freezing = True`` a conv -> multiply -> conv -> divide chain comes back wrong. Two 1x1
convolutions are enough: ``c(b(x) * 2) / 4`` returns exactly twice the eager result on torch 2.13.0+cpu (plain
``torch.compile`` matches). Not a benchmark and not srkd code: a script to attach to an upstream report.

    python benchmarks/trials/inductor_freezing_repro.py      # exit status 1 while the bug is there
"""

from __future__ import annotations

import sys

import torch
import torch._inductor.config as inductor_config
import torch.nn as nn


class ConvMulConvDiv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Conv2d(3, 3, 1)
        self.c = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(x) * 2.0) / 4.0


def main() -> int:
    torch.manual_seed(0)
    model = ConvMulConvDiv().eval().requires_grad_(False)
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        eager = model(x)
        plain = torch.compile(model)(x)
        torch._dynamo.reset()
        inductor_config.freezing = True
        frozen = torch.compile(model)(x)
    print(f"torch {torch.__version__}")
    print(f"plain compile: max |diff| {(plain - eager).abs().max().item():.2e}")
    print(f"freezing:      max |diff| {(frozen - eager).abs().max().item():.2e}, "
          f"frozen / eager = {(frozen / eager).median().item():.4f}")
    return 0 if torch.allclose(frozen, eager, atol=1e-5) else 1


if __name__ == "__main__":
    sys.exit(main())
