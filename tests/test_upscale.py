"""Tiled inference: seams invisible, output dtypes, self-ensemble algebra, the Y-channel path, model state kept."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srkd.data.images import quantize
from srkd.evaluation.upscale import (
    Bicubic,
    _transforms,
    ensemble_forward,
    network_forward,
    super_resolve,
    tile_spans,
    upscale_image,
)
from srkd.models import build_model


def real_image(h: int = 40, w: int = 56) -> torch.Tensor:
    """A crop of scikit-image's bundled astronaut photo as float (3, h, w): real texture, no download."""
    from skimage.data import astronaut

    img = torch.from_numpy(np.ascontiguousarray(astronaut()[100 : 100 + h, 150 : 150 + w].transpose(2, 0, 1)))
    return img.float() / 255.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def tiny_edsr(scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("edsr", scale=scale, n_feats=8, n_resblocks=2).eval()


def tiny_vdsr(scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("vdsr", scale=scale, n_feats=8, n_layers=6).eval()


@pytest.mark.parametrize(
    "length,tile,overlap", [(100, 32, 8), (64, 64, 4), (65, 64, 4), (7, 3, 2), (10, 0, 4)]
)
def test_tile_spans_partition_the_axis(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    covered = []
    for core0, core1, in0, in1 in spans:
        assert 0 <= in0 <= max(0, core0 - overlap) and min(length, core1 + overlap) <= in1 <= length
        assert 0 < core1 - core0 <= (tile if tile > 0 else length)
        covered += list(range(core0, core1))
    assert covered == list(range(length))
    assert len({in1 - in0 for *_, in0, in1 in spans}) == 1  # one input shape for every tile


@pytest.mark.parametrize("make", [tiny_edsr, tiny_vdsr], ids=["edsr-rgb", "vdsr-y"])
def test_tiled_matches_untiled(make):
    model = make(2)
    lr = real_image()
    whole = upscale_image(model, lr, tile=0)
    tiled = upscale_image(
        model, lr, tile=16, overlap=4
    )  # 3x4 tiles, context smaller than the receptive field
    assert whole.shape == tiled.shape == (3, 80, 112)
    assert 50.0 <= psnr(whole, tiled)
    # crop-centre tiling is exact once the overlap covers the receptive field (8 LR pixels for the tiny EDSR)
    if make is tiny_edsr:
        assert psnr(whole, tiled) < 80.0  # the small overlap is visible in the numbers, so the test has teeth
        assert psnr(whole, upscale_image(model, lr, tile=16, overlap=10)) >= 80.0


def test_uint8_and_float16_outputs():
    model = tiny_edsr(3)
    lr = real_image(30, 40)
    f32 = upscale_image(model, lr, tile=16, overlap=8)
    u8 = upscale_image(model, (lr * 255).round().to(torch.uint8), tile=16, overlap=8, out_dtype=torch.uint8)
    f16 = upscale_image(model, lr, tile=16, overlap=8, out_dtype=torch.float16)
    assert u8.dtype == torch.uint8 and f16.dtype == torch.float16 and f32.shape == (3, 90, 120)
    assert f32.min() >= 0 and f32.max() <= 1
    assert (u8.int() - quantize(f32).int()).abs().max() <= 1  # the uint8 input differs from lr by < 0.5/255
    assert (f16.float() - f32).abs().max() < 1e-3


def test_bicubic_model_and_bf16_run():
    lr = real_image(20, 24)
    from srkd.ops.imresize import imresize

    out = upscale_image(Bicubic(2), lr, tile=8, overlap=4)
    assert torch.allclose(out, imresize(lr.unsqueeze(0), scale=2)[0].clamp(0, 1), atol=1e-6)
    bf = upscale_image(tiny_edsr(2), lr, tile=0, precision="bf16")
    fp = upscale_image(tiny_edsr(2), lr, tile=0)
    assert psnr(bf, fp) > 30.0  # bf16 autocast is close to fp32, not identical


def test_transforms_are_the_8_symmetries_with_inverses():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    pairs = _transforms()
    images = {(tuple(fwd(x).shape), tuple(fwd(x).flatten().tolist())) for fwd, _ in pairs}
    assert len(pairs) == 8 and len(images) == 8
    for fwd, inv in pairs:
        assert torch.equal(inv(fwd(x)), x)


def test_self_ensemble_equivariant_model_is_unchanged():
    lr = real_image(16, 20).unsqueeze(0)
    model = Bicubic(2)
    plain = super_resolve(model, lr).rgb
    ens = super_resolve(model, lr, self_ensemble=True).rgb
    assert (plain - ens).abs().max() < 1e-5  # MATLAB bicubic commutes with flips and transposes
    # a non-equivariant network changes (otherwise the option would be a no-op)
    edsr = tiny_edsr(2)
    with torch.no_grad():
        assert (
            super_resolve(edsr, lr).rgb - super_resolve(edsr, lr, self_ensemble=True).rgb
        ).abs().max() > 1e-4
    assert torch.allclose(ensemble_forward(lambda t: t * 2, lr), lr * 2, atol=1e-6)


def test_y_model_recombines_luma_with_upscaled_chroma():
    from srkd.ops.color import rgb_to_ycbcr
    from srkd.ops.imresize import imresize

    model = tiny_vdsr(3)
    lr = real_image(20, 26).unsqueeze(0)
    up = imresize(rgb_to_ycbcr(lr), scale=3)  # the VDSR authors' input: float bicubic of the YCbCr planes
    with torch.no_grad():
        res = super_resolve(model, lr, scale=3)
        assert torch.allclose(res.y, model(up[:, :1]), atol=1e-5)
        rounded = super_resolve(model, lr, scale=3, y_input="rounded")
        up8 = rgb_to_ycbcr(quantize(imresize(lr, scale=3)).float() / 255)
        assert torch.allclose(rounded.y, model(up8[:, :1]), atol=1e-5)
    assert res.y.shape == (1, 1, 60, 78) and res.rgb.shape == (1, 3, 60, 78)
    assert (rounded.y - res.y).abs().max() > 1e-3  # the two protocols really differ
    back = rgb_to_ycbcr(res.rgb)
    assert (back[:, :1] - res.y).abs().max() < 1e-4
    assert (back[:, 1:] - up[:, 1:]).abs().max() < 1e-4


def test_model_state_is_restored():
    model = tiny_edsr(2).train()
    upscale_image(model, real_image(12, 12), tile=0)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


class ShapeSpy(torch.nn.Module):
    """Nearest-neighbour x2 "network" that records the largest input it was given."""

    scale, colour, upsample_input = 2, "rgb", False

    def __init__(self) -> None:
        super().__init__()
        self.largest = (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, tuple(x.shape[-2:]))
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_memory_is_bounded_by_the_tile():
    """The network never sees more than one tile plus its context, and the output is written in place as uint8."""
    spy = ShapeSpy()
    lr = torch.randint(0, 256, (3, 150, 230), dtype=torch.uint8)
    calls = []
    out = upscale_image(
        spy, lr, tile=64, overlap=8, out_dtype=torch.uint8, progress=lambda d, t: calls.append((d, t))
    )
    assert spy.largest == (
        50 + 16,
        58 + 16,
    )  # balanced cores: 3 x 50 rows, 4 x 57-58 columns, + 2 x 8 context
    assert calls == [(i, 12) for i in range(1, 13)]
    assert out.dtype == torch.uint8 and torch.equal(out, lr.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_y_channel_model_with_its_own_upsampler():
    """A 1-channel EDSR upscales the LR luma; chroma comes from bicubic, as for VDSR."""
    from srkd.ops.color import rgb_to_ycbcr

    torch.manual_seed(0)
    model = build_model("edsr", scale=2, n_feats=8, n_resblocks=1, in_channels=1).eval()
    lr = real_image(12, 14).unsqueeze(0)
    with torch.no_grad():
        res = super_resolve(model, lr)
        expected = model(rgb_to_ycbcr(lr)[:, :1])
    assert res.y is not None and torch.allclose(res.y, expected)
    assert res.rgb.shape == (1, 3, 24, 28)


class _LayoutProbe(torch.nn.Module):
    """A 1x1 conv that records whether each input it sees is channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return self.conv(x)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_network_forward_runs_channels_last_in_every_precision(precision: str) -> None:
    # fp32 inference is 15-33 % faster in channels_last on a CPU without bf16 kernels (benchmarks/README.md), and
    # oneDNN's bf16 kernels need it; the caller still gets an NCHW-contiguous result.
    probe = _LayoutProbe().eval()
    x = torch.rand(2, 3, 5, 7)
    with torch.no_grad():
        out = network_forward(probe, x, precision)
        ref = probe.conv(x)
    assert probe.seen == [True]
    assert out.is_contiguous() and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6 if precision == "fp32" else 2e-2, rtol=0)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_measure_latency_runs_channels_last_in_fp32(device: str) -> None:
    # the latency reported is that of the layout srkd's inference runs in, on any device (meta stands in for a
    # GPU here: the layout choice must not depend on the device type)
    from srkd.models.generator_arch import Generator
    from srkd.models.profile import measure_latency

    probe = _LayoutProbe()
    assert measure_latency(probe, (3, 6, 6), device, warmup=0, iters=1, precision="fp32") >= 0
    assert probe.seen == [True]
    # The data-free generator's input is a latent vector, which has no channels_last layout.
    gen = Generator(image_size=8, latent_dim=8)
    assert measure_latency(gen, (3, 8, 8), "cpu", warmup=0, iters=1, precision="fp32") > 0
