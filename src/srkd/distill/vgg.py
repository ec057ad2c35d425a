"""VGG19 feature extractor (relu1_1 ... relu5_1) for CSD's contrastive loss, in plain torch.

Layer indices follow torchvision's ``vgg19().features`` so that its ImageNet state dict (keys
``features.N.weight`` / ``features.N.bias``) loads as is; the classifier and the layers after relu5_1 are not
built. There is no network access at training time, so the weights come from a file (``.pth``/``.pt`` state
dict or ``.safetensors``), checked against a sha256 when one is given. Without a file the network keeps random
weights and a loud warning is logged: the loss still runs (the unit tests use random weights) but CSD results
are then not comparable with the paper.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from safetensors.torch import load_file

from srkd.distill.base import freeze
from srkd.errors import CheckpointError

# torchvision's VGG19 configuration "E" up to conv5_1: channel counts, "M" = max-pool.
_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512]
# Index (into ``features``) one past each tapped ReLU: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
TAP_ENDS = (2, 7, 12, 21, 30)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VggInput = Literal["imagenet", "raw255"]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the five relu_1 activations of an image batch in [0, 1].

    ``input_mode``: ``"imagenet"`` normalises with the ImageNet mean/std the weights were trained with
    (srkd's default); ``"raw255"`` feeds 0-255 values un-normalised, as the public CSD code does.
    """

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(
        self, weights: str | Path | None = None, sha256: str | None = None, input_mode: VggInput = "imagenet"
    ):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        assert len(self.features) == TAP_ENDS[-1]
        self.input_mode = input_mode
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            self.load_weights(weights, sha256)
        else:
            msg = (
                "CSD: no VGG19 weights given (method.vgg_weights); using RANDOM VGG features. The contrastive "
                "loss runs but is not the paper's: give torchvision's vgg19 ImageNet state dict for real runs."
            )
            warnings.warn(msg, stacklevel=2)
        freeze(self)

    def load_weights(self, path: str | Path, sha256: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: VGG19 weights file not found (method.vgg_weights)")
        if sha256 is not None:
            got = sha256_file(path)
            if got.lower() != sha256.lower():
                raise CheckpointError(f"{path}: sha256 {got} does not match method.vgg_sha256 {sha256}")
        try:
            if path.suffix == ".safetensors":
                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign file: one clear line
            raise CheckpointError(f"{path}: cannot read VGG19 weights ({exc})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        wanted = self.features.state_dict()
        picked = {}
        for key in wanted:
            full = f"features.{key}"
            if full not in state:
                raise CheckpointError(
                    f"{path}: missing '{full}' (expected torchvision vgg19 state-dict naming)"
                )
            if tuple(state[full].shape) != tuple(wanted[key].shape):
                raise CheckpointError(
                    f"{path}: '{full}' has shape {tuple(state[full].shape)}, VGG19 needs {tuple(wanted[key].shape)}"
                )
            picked[key] = state[full]
        self.features.load_state_dict(picked)

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # always frozen, whatever the parent module does

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:  # Y-channel models: VGG needs three channels
            x = x.expand(-1, 3, -1, -1)
        if self.input_mode == "imagenet":
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        else:
            x = x * 255.0
        out = []
        start = 0
        for end in TAP_ENDS:
            x = self.features[start:end](x)
            out.append(x)
            start = end
        return out


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TAP_ENDS", "VGG19Features", "sha256_file"]
