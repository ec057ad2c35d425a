"""SR architectures: sizes against the papers, shapes, BasicSR numerical parity, generator = DFSR Table 1, profiling."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from reference import basicsr_archs

from srkd.errors import SrkdError
from srkd.models import build_model, run_sr
from srkd.models.profile import count_flops, count_params, measure_latency
from srkd.models.swinir_arch import shifted_window_mask

SWINIR_STUDENT = dict(embed_dim=60, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6))  # DUKD "60-dim, 4 blocks"

# (arch, kwargs, params in M as printed by the papers, DUKD Table 1 x4 GFLOPs on 3x256x256 or None)
PAPER_SIZES = [
    ("edsr", dict(n_feats=256, n_resblocks=32, res_scale=0.1), 43.09, 3293.35),
    ("edsr", dict(n_feats=64, n_resblocks=32), 2.70, 207.28),
    ("rcan", dict(n_feats=64, n_resgroups=10, n_resblocks=20), 15.59, 1044.03),
    ("rcan", dict(n_feats=64, n_resgroups=10, n_resblocks=6), 5.17, 366.98),
    ("swinir", dict(embed_dim=180), 11.90, 861.27),
    ("swinir", SWINIR_STUDENT, 1.24, 121.48),
]
# Our FLOPs are MACs from torch's counter (see profile.py). EDSR is plain convs: Table 1 is reproduced to the
# printed 0.01G. RCAN (channel attention) and SwinIR (norms, softmax, bias adds) differ by how the paper's tool
# counts the non-conv ops: measured 0.08% and 0.5-0.8% below the paper, so the tolerance is 0.2% / 1%.
FLOPS_RTOL = {"rcan": 2e-3, "swinir": 1e-2}


def _meta(arch: str, **kwargs) -> nn.Module:
    with torch.device("meta"):  # no memory, no init cost: the 43M EDSR is built in milliseconds
        return build_model(arch, scale=kwargs.pop("scale", 4), **kwargs)


@pytest.mark.parametrize(("arch", "kwargs", "params_m", "gflops"), PAPER_SIZES)
def test_paper_param_counts_and_flops(arch, kwargs, params_m, gflops) -> None:
    model = _meta(arch, **kwargs)
    assert round(count_params(model) / 1e6, 2) == params_m
    ours = count_flops(model, (3, 256, 256)) / 1e9
    if arch == "edsr":
        assert round(ours, 2) == gflops
    else:
        assert ours == pytest.approx(gflops, rel=FLOPS_RTOL[arch])


def test_vdsr_exact_sizes_and_flops() -> None:
    assert count_params(build_model("vdsr")) == 664_704  # pytorch-vdsr, bias-free
    assert count_params(build_model("vdsr", n_feats=32)) == 166_464  # DFSR's VDSR-half
    assert count_params(build_model("vdsr", bias=True)) == 664_704 + 64 * 19 + 1  # MatConvNet layout
    # every weight is used once per output pixel, on the x2-upscaled 256x256 input
    assert count_flops(build_model("vdsr", scale=2), (1, 256, 256)) == 664_704 * 512 * 512


def test_exact_counts_pin_the_layouts() -> None:
    """Rounded counts could hide a missing bias; these are the exact BasicSR/official layout counts."""
    assert count_params(_meta("edsr", n_feats=256, n_resblocks=32)) == 43_089_923
    assert count_params(_meta("rcan")) == 15_592_355
    assert count_params(_meta("swinir")) == 11_900_199
    assert count_params(_meta("swinir", **SWINIR_STUDENT)) == 1_235_439


TINY = {
    "edsr": dict(n_feats=16, n_resblocks=2),
    "rcan": dict(n_feats=16, n_resgroups=2, n_resblocks=2, reduction=4),
    "swinir": dict(embed_dim=12, depths=(2, 2), num_heads=(2, 3), window_size=4),
}


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("arch", sorted(TINY))
def test_output_shapes_any_size(arch: str, scale: int) -> None:
    model = build_model(arch, scale=scale, **TINY[arch]).eval()
    assert (model.scale, model.colour, model.upsample_input) == (scale, "rgb", False)
    # odd sizes; 3x5 is smaller than SwinIR's window (replicate instead of reflect padding)
    for h, w in [(8, 8), (11, 7), (3, 5)]:
        with torch.no_grad():
            out = model(torch.rand(2, 3, h, w))
        assert out.shape == (2, 3, h * scale, w * scale)
        assert torch.isfinite(out).all()


def test_unsupported_scale_and_bad_kwargs_are_user_errors() -> None:
    with pytest.raises(SrkdError, match="unsupported scale 5"):
        build_model("edsr", scale=5)
    with pytest.raises(SrkdError, match="accepted arguments: .*n_resblocks"):
        build_model("edsr", n_blocks=3)
    with pytest.raises(SrkdError, match="num_heads has 2 entries but depths has 3"):
        build_model("swinir", depths=(2, 2, 2), num_heads=(6, 6))
    with pytest.raises(SrkdError, match="upsampler"):
        build_model("swinir", upsampler="nearest+conv")


def test_vdsr_is_residual_on_the_upscaled_input() -> None:
    model = build_model("vdsr", n_feats=8, n_layers=5, scale=3)
    assert (model.colour, model.upsample_input, len(model.body)) == ("y", True, 3)
    nn.init.zeros_(model.tail.weight)  # no residual predicted -> the input comes back unchanged
    x = torch.rand(1, 1, 10, 10)
    torch.testing.assert_close(model(x), x)
    model.scale = 4  # one net for all scales
    pytest.importorskip("srkd.ops.imresize")
    assert run_sr(model, torch.rand(1, 1, 6, 5)).shape == (1, 1, 24, 20)


def test_swinir_pads_by_reflection_and_crops() -> None:
    model = build_model("swinir", scale=2, **TINY["swinir"]).eval()
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        got = model(x)
        padded = model(torch.nn.functional.pad(x, (0, 1, 0, 2), mode="reflect"))
    torch.testing.assert_close(got, padded[..., :12, :14])


def test_shift_mask_cached_per_size_and_separates_rolled_regions() -> None:
    shifted_window_mask.cache_clear()
    m = shifted_window_mask(8, 12, 4, 2, torch.device("cpu"))
    assert m.shape == (6, 16, 16)
    assert shifted_window_mask(8, 12, 4, 2, torch.device("cpu")) is m
    assert shifted_window_mask(12, 8, 4, 2, torch.device("cpu")).shape == (6, 16, 16)
    assert shifted_window_mask.cache_info().hits == 1
    # only windows touching the bottom/right edge mix wrapped-around pixels
    masked = (m != 0).flatten(1).any(1).view(2, 3)
    assert masked.tolist() == [[False, False, True], [True, True, True]]
    assert set(m.unique().tolist()) == {0.0, -100.0}


def test_swinir_trains_after_inference_mode_and_in_bf16() -> None:
    """The mask cache must not hand inference tensors to autograd; bf16 autocast must not trip SDPA's mask dtype."""
    model = build_model("swinir", scale=2, **TINY["swinir"])
    x = torch.rand(2, 3, 8, 8)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).mean().backward()
    assert model.body[0].residual_group.blocks[1].attn.qkv.weight.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.float32  # residual stream and output in fp32 (fp32_stream)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_residual_stream_stays_fp32_under_autocast(arch: str) -> None:
    """Under bf16 autocast the convolutions run in bf16 but the residual sums do not (see ``fp32_stream``)."""
    torch.manual_seed(0)
    model = build_model(arch, scale=2, **TINY[arch]).eval()
    x = torch.rand(1, 3, 12, 12)
    body_dtypes: list[torch.dtype] = []
    model.body.register_forward_hook(lambda _m, _i, out: body_dtypes.append(out.dtype))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32 and body_dtypes == [torch.float32]
    with torch.no_grad():
        assert model(x).dtype == torch.float32 and body_dtypes[-1] == torch.float32


def test_fp32_stream_beats_a_bf16_stream() -> None:
    """Already at initialisation a 32-block stream kept in bf16 lands ~1.5x further from the fp32 output (in
    training the larger effect is on small residual updates; see benchmarks/README.md, kd-accuracy)."""
    torch.manual_seed(0)
    model = build_model("edsr", scale=2, n_feats=16, n_resblocks=32).eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fp32_err = (model(x) - ref).abs().mean()
            feats = model.head(model.shift.normalize(x))  # the same forward with the stream left in bf16
            feats = feats + model.conv_after_body(model.body(feats))
            bf16_err = (model.shift.denormalize(model.tail(feats).float()) - ref).abs().mean()
    assert fp32_err * 1.3 < bf16_err, (fp32_err, bf16_err)


@pytest.mark.parametrize(
    ("arch", "big", "small", "dropped"),
    [
        ("vdsr", dict(n_feats=8, n_layers=6), dict(n_feats=8, n_layers=4), "body.2."),
        ("edsr", dict(n_feats=8, n_resblocks=4), dict(n_feats=8, n_resblocks=2), "body.2."),
        (
            "rcan",
            dict(n_feats=8, n_resgroups=2, n_resblocks=3, reduction=4),
            dict(n_feats=8, n_resgroups=2, n_resblocks=1, reduction=4),
            "body.0.residual_group.1.",
        ),
        (
            "swinir",
            dict(embed_dim=12, depths=(2, 2, 2), num_heads=2, window_size=4),
            dict(embed_dim=12, depths=(2,), num_heads=2, window_size=4),
            "body.1.",
        ),
    ],
)
def test_fewer_blocks_load_a_bigger_models_weights(arch, big, small, dropped) -> None:
    """Progressive distillation grows the body; earlier weights must load by name with strict=False."""
    teacher, student = build_model(arch, **big), build_model(arch, **small)
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(k.startswith(dropped[:5]) for k in result.unexpected_keys)
    assert any(k.startswith(dropped) for k in result.unexpected_keys)
    torch.testing.assert_close(
        student.head.weight if arch != "vdsr" else student.head.conv.weight,
        teacher.head.weight if arch != "vdsr" else teacher.head.conv.weight,
    )


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [("vdsr", dict(n_feats=8, n_layers=4)), *TINY.items(), ("swinir", dict(**TINY["swinir"], resi_connection="3conv"))],
)
def test_identity_init_makes_every_body_block_pass_its_input(arch, kwargs) -> None:
    """Function-preserving growth (``method.progressive.init: identity``) relies on ``identity_()``."""
    torch.manual_seed(0)
    model = build_model(arch, scale=2, **kwargs)
    x = model.head(torch.rand(2, model.in_channels, 8, 8))  # a body block's input (post-ReLU for VDSR)
    for block in model.body:
        with torch.no_grad():
            assert (block(x) - x).abs().max() > 1e-3  # not the identity before
            block.identity_()
            torch.testing.assert_close(block(x), x, rtol=0, atol=1e-6)
        assert any(p.requires_grad for p in block.parameters())


# ---- numerical parity with BasicSR 1.4.2's architectures (read from the sdist, skipped without it) ----------


# The renames documented in each arch file (what `srkd convert` applies to BasicSR checkpoints).
BASICSR_RENAMES = {
    "conv_first.": "head.",
    "layers.": "body.",
    "conv_before_upsample.": "tail.conv_before_upsample.",
    "upsample.": "tail.upsample.",
    "conv_last.": "tail.conv_last.",
}


def _from_basicsr(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            continue
        prefix = next((p for p in BASICSR_RENAMES if key.startswith(p)), None)
        out[BASICSR_RENAMES[prefix] + key[len(prefix) :] if prefix else key] = value
    return out


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # raised inside BasicSR's SwinIR
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_numerically_equal_to_basicsr(scale: int) -> None:
    ref = basicsr_archs()
    torch.manual_seed(scale)
    pairs = [
        (
            ref.EDSR(3, 3, num_feat=16, num_block=3, upscale=scale, res_scale=0.1),
            build_model("edsr", scale=scale, n_feats=16, n_resblocks=3, res_scale=0.1),
            [(9, 7)],
        ),
        (
            ref.RCAN(3, 3, num_feat=32, num_group=2, num_block=2, upscale=scale),
            build_model("rcan", scale=scale, n_feats=32, n_resgroups=2, n_resblocks=2),
            [(9, 7)],
        ),
        # BasicSR's SwinIR does not pad: window multiples, square and not, other than img_size (mask per size)
        (
            ref.SwinIR(
                upscale=scale,
                img_size=16,
                window_size=4,
                depths=[2, 3],
                embed_dim=24,
                num_heads=[2, 3],
                mlp_ratio=2,
                upsampler="pixelshuffle" if scale < 4 else "pixelshuffledirect",
            ),
            build_model(
                "swinir",
                scale=scale,
                embed_dim=24,
                depths=(2, 3),
                num_heads=(2, 3),
                window_size=4,
                upsampler="pixelshuffle" if scale < 4 else "pixelshuffledirect",
            ),
            [(16, 16), (8, 12)],
        ),
    ]
    for theirs, ours, sizes in pairs:
        ours.load_state_dict(_from_basicsr(theirs.state_dict()), strict=True)
        theirs.eval(), ours.eval()
        for h, w in sizes:
            x = torch.rand(2, 3, h, w)
            with torch.no_grad():
                torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)


# ---- the data-free generator: DFSR supplement Table 1 ---------------------------------------------------------


def _layer_outputs(gen: nn.Module, z: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
        for n, m in gen.named_children()
    ]
    gen(z)
    for h in handles:
        h.remove()
    return shapes


@pytest.mark.parametrize(("size", "channels"), [(48, 3), (24, 1), (16, 1), (12, 1)])
def test_generator_matches_table1(size: int, channels: int) -> None:
    gen = build_model("generator", image_size=size, channels=channels)
    init = size // 4
    # Table 1 writes the Linear weight as (in, out) = (256, 128 x init x init); torch stores (out, in)
    assert tuple(gen.fc.weight.shape) == (128 * init * init, 256)
    assert [gen.norm0.eps, gen.norm1.eps, gen.norm2.eps] == [1e-5, 0.8, 0.8]
    assert all(n.affine and not n.track_running_stats for n in (gen.norm0, gen.norm1, gen.norm2))
    assert [tuple(c.weight.shape) for c in (gen.conv1, gen.conv2, gen.conv_out)] == [
        (128, 128, 3, 3),
        (64, 128, 3, 3),
        (channels, 64, 3, 3),
    ]
    assert _layer_outputs(gen, torch.randn(2, 256)) == {
        "fc": (128 * init * init,),
        "norm0": (128, init, init),
        "conv1": (128, 2 * init, 2 * init),
        "norm1": (128, 2 * init, 2 * init),
        "conv2": (64, size, size),
        "norm2": (64, size, size),
        "conv_out": (channels, size, size),
    }
    imgs = gen.sample(4, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (4, channels, size, size)
    assert 0.0 <= imgs.min() and imgs.max() <= 1.0 and imgs.std() > 0
    torch.testing.assert_close(gen.sample(4, generator=torch.Generator().manual_seed(0)), imgs)


def test_generator_any_size_and_gradient() -> None:
    for size in (10, 18, 49):
        assert build_model("generator", image_size=size, channels=1).sample(2).shape == (2, 1, size, size)
    with pytest.raises(SrkdError, match="image_size must be >= 8"):
        build_model("generator", image_size=6)
    gen = build_model("generator", image_size=12, channels=1)
    gen.sample(3).mean().backward()
    assert gen.fc.weight.grad is not None and gen.fc.weight.grad.abs().sum() > 0


# ---- profiling --------------------------------------------------------------------------------------------------


def test_profile_leaves_model_alone_and_checks_channels() -> None:
    model = build_model("edsr", n_feats=8, n_resblocks=1, scale=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # head 3->8 + 2 body convs + conv_after_body on 16x16, upsampler conv 8->32 on 16x16, last conv on 32x32
    macs = (27 * 8 + 3 * 72 * 8 + 72 * 32) * 256 + 72 * 3 * 1024
    assert count_flops(model, (3, 16, 16)) == macs
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(SrkdError, match="takes 1-channel input"):
        count_flops(build_model("vdsr"), (3, 64, 64))
    with pytest.raises(SrkdError, match="C x H x W"):
        count_flops(model, (16, 16))
    gen = build_model("generator", image_size=12, channels=1)  # input is the latent, not an image
    assert count_flops(gen) == 256 * 128 * 9 + (128 * 128 * 36 + 128 * 64 * 144 + 64 * 144) * 9


def test_measure_latency() -> None:
    model = build_model("edsr", n_feats=8, n_resblocks=1, scale=2)
    for precision in ("fp32", "bf16"):
        seconds = measure_latency(model, (3, 16, 16), "cpu", warmup=1, iters=3, precision=precision)
        assert 0.0 < seconds < 5.0
    assert model.training  # mode restored
    with pytest.raises(SrkdError, match="unknown precision 'int8'"):
        measure_latency(model, (3, 16, 16), precision="int8")
