"""BT.601 colour conversion and Y-channel PSNR/SSIM: exact values, BasicSR 1.4.2 parity, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path
from reference import basicsr_reference

from srkd.data.images import read_image
from srkd.errors import DataError
from srkd.metrics import calculate_psnr_y, psnr_y, ssim_y
from srkd.ops.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from srkd.ops.imresize import imresize

# ---------------------------------------------------------------- colour


def test_matlab_rgb2ycbcr_reference_colours():
    colours = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    ycc = rgb_to_ycbcr(colours.view(5, 3, 1, 1)).view(5, 3) * 255
    expected = torch.tensor(
        [
            [16, 128, 128],
            [235, 128, 128],
            [16 + 65.481, 128 - 37.797, 128 + 112.0],
            [16 + 128.553, 128 - 74.203, 128 - 93.786],
            [16 + 24.966, 128 + 112.0, 128 - 18.214],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(ycc, expected)


def test_round_trip_and_y_only():
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(rgb_to_y(x), rgb_to_ycbcr(x)[:, :1])
    assert rgb_to_y(x[0]).shape == (1, 5, 7) and rgb_to_ycbcr(x.float()).dtype == torch.float32


def test_colour_parity_with_basicsr():
    ref = basicsr_reference()
    x = torch.rand(3, 9, 11)
    hwc = x.permute(1, 2, 0).numpy()
    np.testing.assert_allclose(rgb_to_ycbcr(x).permute(1, 2, 0).numpy(), ref.rgb2ycbcr(hwc), atol=1e-6)
    ycc = rgb_to_ycbcr(x)
    # BasicSR's inverse uses constants rounded to 8 decimals; ours is the exact inverse.
    np.testing.assert_allclose(
        ycbcr_to_rgb(ycc).permute(1, 2, 0).numpy(), ref.ycbcr2rgb(ycc.permute(1, 2, 0).numpy()), atol=2e-5
    )


def test_colour_rejects_bad_input():
    with pytest.raises(ValueError, match="3, H, W"):
        rgb_to_y(torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="float"):
        rgb_to_ycbcr(torch.zeros(3, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------- metrics


def _bgr(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> what BasicSR receives from cv2: HWC BGR, or a 2-D array for one channel."""
    a = img.numpy()
    return a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0)[..., ::-1])


def _degraded(hr: torch.Tensor, scale: int) -> torch.Tensor:
    hr = hr[:, : hr.shape[1] // scale * scale, : hr.shape[2] // scale * scale]
    return imresize(imresize(hr, scale=1 / scale), scale=scale)


def _assert_parity(ref, sr: torch.Tensor, hr: torch.Tensor, crop: int) -> None:
    theirs_psnr = ref.calculate_psnr(_bgr(sr), _bgr(hr), crop, test_y_channel=True)
    theirs_ssim = ref.calculate_ssim(_bgr(sr), _bgr(hr), crop, test_y_channel=True)
    assert abs(psnr_y(sr, hr, crop).item() - theirs_psnr) < 1e-4
    assert abs(ssim_y(sr, hr, crop).item() - theirs_ssim) < 1e-5


@pytest.mark.parametrize("name", ["baby.png", "woman.png"])
def test_metrics_parity_colour(name):
    ref = basicsr_reference()
    hr = read_image(shared_path("data", "benchmarks", "Set5", "HR", name))
    for scale in (2, 4):
        sr = _degraded(hr, scale)
        _assert_parity(ref, sr, hr[:, : sr.shape[1], : sr.shape[2]], scale)
    noisy = (hr.float() + torch.randn(hr.shape) * 8).round().clamp(0, 255).to(torch.uint8)
    _assert_parity(ref, noisy, hr, 0)


def test_metrics_parity_grayscale_bridge():
    """bridge.png is 8-bit gray: compared on its own values when both sides are 1-channel (BasicSR on 2-D
    arrays), on the Y of the replicated image when 3-channel, and the gray side replicated when mixed."""
    ref = basicsr_reference()
    gray = read_image(shared_path("data", "benchmarks", "Set14", "HR", "bridge.png"), mode="unchanged")
    assert gray.shape[0] == 1
    sr = _degraded(gray, 3)
    hr = gray[:, : sr.shape[1], : sr.shape[2]]
    _assert_parity(ref, sr, hr, 3)  # 2-D arrays
    rgb_sr, rgb_hr = sr.expand(3, -1, -1).contiguous(), hr.expand(3, -1, -1).contiguous()
    _assert_parity(ref, rgb_sr, rgb_hr, 3)  # what cv2.imread(path) (colour) gives
    mixed = psnr_y(rgb_sr, hr, 3).item()
    assert mixed == psnr_y(rgb_sr, rgb_hr, 3).item() and mixed != psnr_y(sr, hr, 3).item()
    assert ssim_y(sr, rgb_hr, 3).item() == ssim_y(rgb_sr, rgb_hr, 3).item()


def test_float_inputs_are_compared_unquantised():
    ref = basicsr_reference()
    hr = torch.rand(3, 40, 44)
    sr = (hr + 0.02 * torch.randn(hr.shape)).clamp(0, 1)
    # uint8 / 255 as float32 gives the uint8 score (up to float32 rounding of v / 255)
    hr8, sr8 = (hr * 255).round().to(torch.uint8), (sr * 255).round().to(torch.uint8)
    assert abs(psnr_y(sr8.float() / 255, hr8.float() / 255, 2).item() - psnr_y(sr8, hr8, 2).item()) < 1e-6
    # and an unquantised float pair matches BasicSR fed the same values on the 0-255 scale
    theirs = ref.calculate_psnr(_bgr(sr * 255), _bgr(hr * 255), 2, test_y_channel=True)
    assert abs(psnr_y(sr, hr, 2).item() - theirs) < 1e-4


def test_bicubic_calibration_set5(set5_hr):
    """The reference pipeline's Set5 bicubic numbers (shared/notes/calibration.md) from imresize + metrics."""
    expected = {2: 33.68, 3: 30.40, 4: 28.43}
    for scale, target in expected.items():
        scores = []
        for path in sorted(set5_hr.glob("*.png")):
            hr = read_image(path)
            sr = _degraded(hr, scale)
            scores.append(psnr_y(sr, hr[:, : sr.shape[1], : sr.shape[2]], scale).item())
        assert abs(np.mean(scores) - target) < 0.005, (scale, np.mean(scores))


def test_batched_identical_and_aliases():
    hr = torch.randint(0, 256, (4, 3, 32, 30), dtype=torch.uint8)
    sr = hr.clone()
    sr[1:] = (hr[1:].int() + torch.randint(-3, 4, hr[1:].shape)).clamp(0, 255).to(torch.uint8)
    p, s = psnr_y(sr, hr, 2), ssim_y(sr, hr, 2)
    assert p.shape == (4,) and s.shape == (4,) and p.dtype == torch.float64
    assert torch.isinf(p[0]) and s[0].item() == pytest.approx(1.0) and torch.isfinite(p[1:]).all()
    for i in range(4):
        assert psnr_y(sr[i], hr[i], 2).item() == p[i].item() and psnr_y(sr[i], hr[i], 2).dim() == 0
        assert ssim_y(sr[i], hr[i], 2).item() == pytest.approx(s[i].item(), abs=1e-12)
    assert calculate_psnr_y is psnr_y


def test_psnr_known_value():
    hr = torch.full((1, 20, 20), 100, dtype=torch.uint8)
    sr = hr + 5  # 1-channel: own values, MSE = 25
    assert psnr_y(sr, hr, 0).item() == pytest.approx(10 * np.log10(255**2 / 25))


def test_metric_errors():
    a = torch.zeros(3, 20, 20, dtype=torch.uint8)
    with pytest.raises(DataError, match="sizes differ"):
        psnr_y(a, torch.zeros(3, 20, 21, dtype=torch.uint8), 2)
    with pytest.raises(DataError, match="crop_border"):
        psnr_y(a, a, 10)
    with pytest.raises(DataError, match="SSIM window"):
        ssim_y(a, a, 5)
    with pytest.raises(ValueError, match="channels"):
        psnr_y(torch.zeros(2, 20, 20), torch.zeros(2, 20, 20), 0)
