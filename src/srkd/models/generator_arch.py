"""The data-free generator of DFSR (Zhang et al., IJCAI 2021), exactly its supplement's Table 1.

    z (latent_dim) -> Linear -> (128, init, init) -> InstanceNorm(affine)
      -> nearest x2 -> conv 3x3 128->128 -> InstanceNorm(eps=0.8, affine) -> LeakyReLU(0.2)
      -> nearest x2 -> conv 3x3 128->64  -> InstanceNorm(eps=0.8, affine) -> LeakyReLU(0.2)
      -> conv 3x3 64->channels -> tanh -> (t + 1) / 2 in [0, 1]

with ``init = image_size // 4``. EDSR uses ``image_size=48, channels=3``; VDSR ``channels=1`` and
``image_size = 48 // scale`` (24 / 16 / 12, all multiples of 4). When ``image_size`` is not a multiple of 4 the
second nearest upsampling goes to ``image_size`` instead of x2 (the only deviation from Table 1), so the output is
always exactly ``image_size`` square. The eps=0.8 norms are Table 1's (inherited from the DAFL generator's BN).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from srkd.errors import SrkdError


class Generator(nn.Module):
    def __init__(self, image_size: int = 48, channels: int = 3, latent_dim: int = 256) -> None:
        super().__init__()
        if image_size < 8:  # InstanceNorm needs more than one pixel at init size
            raise SrkdError(f"generator: image_size must be >= 8, got {image_size}")
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.init_size = image_size // 4
        self.fc = nn.Linear(latent_dim, 128 * self.init_size**2)
        self.norm0 = nn.InstanceNorm2d(128, affine=True)
        self.conv1 = nn.Conv2d(128, 128, 3, 1, 1)
        self.norm1 = nn.InstanceNorm2d(128, eps=0.8, affine=True)
        self.conv2 = nn.Conv2d(128, 64, 3, 1, 1)
        self.norm2 = nn.InstanceNorm2d(64, eps=0.8, affine=True)
        self.conv_out = nn.Conv2d(64, channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], 128, self.init_size, self.init_size)
        x = F.interpolate(self.norm0(x), scale_factor=2, mode="nearest")
        x = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="nearest")
        x = F.leaky_relu(self.norm2(self.conv2(x)), 0.2)
        return (torch.tanh(self.conv_out(x)) + 1) / 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from z ~ N(0, I); pass a seeded ``torch.Generator`` for reproducible draws."""
        device = self.fc.weight.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device, dtype=self.fc.weight.dtype)
        return self(z)
