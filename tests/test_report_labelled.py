"""labelled_images: the side-by-side sample grids of issue 37 (one row per data-free mode)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from srkd.report.figures import labelled_images


def test_images_keep_their_pixels_and_order() -> None:
    red = torch.zeros(3, 40, 120)
    red[0] = 1.0
    blue = torch.zeros(3, 20, 60)
    blue[2] = 1.0
    png = labelled_images([("paper", red), ("code", blue)], title="samples")
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.width >= 120 and img.height >= 60  # never downsampled below the pictures' own size
    px = torch.from_numpy(np.asarray(img, dtype=np.float32))
    reds = (px[..., 0] > 200) & (px[..., 2] < 50)
    blues = (px[..., 2] > 200) & (px[..., 0] < 50)
    assert reds.sum() >= 0.9 * 40 * 120 and blues.sum() >= 0.9 * 20 * 60
    # stacked in the given order: every red row above every blue row
    assert reds.any(1).nonzero().max() < blues.any(1).nonzero().min()


def test_grey_images_and_empty_input() -> None:
    png = labelled_images([("y", torch.rand(1, 16, 16))])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        labelled_images([])
