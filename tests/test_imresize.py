"""MATLAB bicubic imresize: parity with BasicSR 1.4.2, sizes, batching, tiling, gradients, dtypes.

Tests that take the ``path`` fixture run twice: through the C++ kernels (skipped, with the reason, where they
cannot be built) and through the torch path that every other case (GPU, float64, autograd) uses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path
from reference import basicsr_reference
from test_imresize_native import spy_native

import srkd.ops.imresize as imresize_module
from srkd.data.images import read_image
from srkd.ops import native
from srkd.ops.imresize import imresize, output_size


@pytest.fixture(params=["native", "torch"])
def path(request, monkeypatch):
    """Run the test through one implementation of the CPU float32 passes, and check that it is the one used."""
    if request.param == "native":
        if native.library() is None:
            pytest.skip(f"native imresize {native.status()}")
    else:
        monkeypatch.setattr(native, "library", lambda: None)
    calls = spy_native(monkeypatch)
    yield request.param
    assert bool(calls) == (request.param == "native")


def _reference_uint8(ref, img: torch.Tensor, scale: float) -> np.ndarray:
    """BasicSR's imresize on a uint8 (C, H, W) image, rounded to uint8 half away from zero as MATLAB does."""
    hwc = img.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    out = ref.imresize(hwc, scale) * 255.0
    out = out if out.ndim == 3 else out[:, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def _images() -> list[torch.Tensor]:
    """Real photos with awkward sizes: non-square, not multiples of 2/3/4, and a grayscale one."""
    woman = read_image(shared_path("data", "benchmarks", "Set5", "HR", "woman.png"))  # 228x344 RGB
    comic = read_image(shared_path("data", "benchmarks", "Set14", "HR", "comic.png"))[
        :, :181, :125
    ]  # odd sizes
    bridge = read_image(shared_path("data", "benchmarks", "Set14", "HR", "bridge.png"), mode="unchanged")
    return [woman, comic, bridge[:, 100:301, 50:250]]  # bridge: 1 channel


@pytest.mark.parametrize("scale", [1 / 4, 1 / 2, 1 / 3, 4, 2, 3, 0.7, 1.5])
def test_uint8_parity_with_basicsr(scale, path):
    ref = basicsr_reference()
    for img in _images():
        src = img if scale < 1 else imresize(img, scale=1 / 4)  # enlarge LR-sized images, as SR does
        ours = imresize(src, scale=scale)
        theirs = _reference_uint8(ref, src, scale)
        assert ours.dtype == torch.uint8 and ours.shape == theirs.shape
        diff = np.abs(ours.numpy().astype(int) - theirs.astype(int))
        assert (diff == 0).mean() >= 0.999, f"scale {scale}: {(diff == 0).mean():.5f} identical"
        assert diff.max() <= 1


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 3, 0.7])
def test_float_parity_with_basicsr(scale, path):
    ref = basicsr_reference()
    img = _images()[0].float() / 255.0
    src = img if scale < 1 else imresize(img, scale=1 / 4)
    ours = imresize(src, scale=scale)
    theirs = ref.imresize(src.permute(1, 2, 0).numpy(), scale).transpose(2, 0, 1)
    assert ours.dtype == torch.float32 and ours.shape == theirs.shape
    # BasicSR builds its weights in float32; ours are float64 then cast: only rounding noise may differ.
    assert np.abs(ours.numpy() - theirs).max() < 2e-5


def test_output_size_is_matlab_ceil_and_exact_for_cropped_hr():
    assert output_size(229, 1 / 4) == 58 and output_size(10, 3) == 30 and output_size(7, 0.5) == 4
    assert imresize(torch.rand(3, 229, 131), scale=0.25).shape == (3, 58, 33)
    for n in range(1, 1200):
        for s in (2, 3, 4, 8):
            assert output_size(n * s, 1 / s) == n and output_size(n, s) == n * s


def test_size_argument():
    x = torch.rand(2, 3, 20, 30, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, size=(40, 60)), imresize(x, scale=2.0))
    torch.testing.assert_close(
        imresize(x, size=(20, 30)), x
    )  # identity: the cubic is 1 at 0, 0 at other integers
    y = imresize(x, size=(10, 30))  # one axis only: each column is resized on its own
    assert y.shape == (2, 3, 10, 30)
    torch.testing.assert_close(y[..., 5:6], imresize(x[..., 5:6], size=(10, 1)))
    torch.testing.assert_close(y, imresize(x.transpose(-1, -2), size=(30, 10)).transpose(-1, -2))


def test_batched_equals_single_and_channels_are_independent(path):
    x = torch.rand(3, 3, 37, 41)
    batched = imresize(x, scale=0.5)
    for i in range(3):
        torch.testing.assert_close(batched[i], imresize(x[i], scale=0.5))
        torch.testing.assert_close(batched[i, 1:2], imresize(x[i, 1:2], scale=0.5))


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 3, 4, 0.7])
def test_tiled_path_equals_dense_matrix(scale, monkeypatch):
    """CPU blocks (with and without autograd) give the same numbers as one dense matrix per axis."""
    x = torch.rand(2, 2, 300, 260, dtype=torch.float64)
    tiled = imresize(x, scale=scale)
    out_len = output_size(300, scale)
    tile = imresize_module._tile(300, out_len, torch.device("cpu"))
    assert len(imresize_module._blocks(300, out_len, scale, True, tile, "cpu", torch.float64)) > 1
    xg = x.clone().requires_grad_(True)
    tiled_grad_path = imresize(xg, scale=scale)
    monkeypatch.setattr(imresize_module, "_tile", lambda in_len, out_len, device: out_len)
    dense = imresize(x, scale=scale)
    torch.testing.assert_close(tiled, dense, rtol=0, atol=1e-12)
    torch.testing.assert_close(tiled_grad_path.detach(), dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetric_boundary_matches_matlab_padding(dtype):
    """Shrinking a tiny image reads far beyond the border: MATLAB mirrors with the edge repeated."""
    x = torch.arange(5, dtype=dtype).view(1, 1, 5)
    x = x.expand(1, 3, 5).clone()  # 3 identical rows: the H axis is constant, the W axis carries the signal
    out = imresize(x, scale=0.25)  # kernel width 16 >> 5 pixels
    # Hand check with explicit symmetric padding (period 10: 0 1 2 3 4 4 3 2 1 0) and the widened kernel.
    u = 0.5 / 0.25 - 0.5
    idx = torch.arange(-20, 25)
    period = idx.remainder(10)
    values = torch.where(period < 5, period, 9 - period).double()
    d = (u - idx.double()) * 0.25
    ad = d.abs()
    w = (1.5 * ad**3 - 2.5 * ad**2 + 1) * (ad <= 1) + (-0.5 * ad**3 + 2.5 * ad**2 - 4 * ad + 2) * (
        (ad > 1) & (ad <= 2)
    )
    expected = (w * values).sum() / w.sum()
    assert out.shape == (1, 1, 2)
    torch.testing.assert_close(out[0, 0, 0], expected.to(dtype))


def test_gradcheck_float64():
    for scale in (0.5, 2.0):
        x = torch.rand(1, 1, 5, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, s=scale: imresize(t, scale=s), (x,))


def test_gradient_through_tiled_path_is_the_adjoint():
    x = torch.rand(1, 1, 200, 180, dtype=torch.float64, requires_grad=True)
    g = torch.rand(1, 1, 50, 45, dtype=torch.float64)
    (imresize(x, scale=0.25) * g).sum().backward()
    # <A x, g> = <x, A^T g>: check with a random probe instead of building A.
    probe = torch.rand_like(x)
    lhs = (imresize(probe, scale=0.25) * g).sum()
    rhs = (probe * x.grad).sum()
    torch.testing.assert_close(lhs, rhs)


def test_uint8_rounds_clamps_and_keeps_constants(path):
    step = torch.zeros(1, 16, 16, dtype=torch.uint8)
    step[:, :, 8:] = 255
    up_float = imresize(step.float(), scale=4)
    assert up_float.max() > 255.5 and up_float.min() < -0.5  # bicubic overshoot exists...
    up = imresize(step, scale=4)
    assert up.dtype == torch.uint8  # ...and is clamped, with MATLAB's half-away-from-zero rounding
    assert torch.equal(up, up_float.clamp(0, 255).add(0.5).floor().to(torch.uint8))
    for value in (0, 1, 127, 128, 254, 255):
        const = torch.full((3, 23, 17), value, dtype=torch.uint8)
        for scale in (0.25, 1 / 3, 0.7, 2, 3):
            assert torch.equal(
                imresize(const, scale=scale), torch.full_like(imresize(const, scale=scale), value)
            )


def test_dtypes_and_autocast():
    x = torch.rand(2, 3, 24, 24)
    ref = imresize(x, scale=0.5)
    assert imresize(x.double(), scale=0.5).dtype == torch.float64
    low = imresize(x.bfloat16(), scale=0.5)
    assert low.dtype == torch.float32  # computed (and returned) in float32 for accuracy
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = imresize(x, scale=0.5)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, ref)


def test_bad_arguments():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(x, scale=2, size=(16, 16))
    with pytest.raises(ValueError, match="positive"):
        imresize(x, scale=0)
    with pytest.raises(ValueError, match="uint8 or floating"):
        imresize(x.to(torch.int32), scale=2)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        imresize(torch.rand(8, 8), scale=2)
