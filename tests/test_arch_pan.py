"""PAN: shapes, parameter counts, the published checkpoints (strict load, Set5 PSNR), bf16, ONNX, students."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from srkd.checkpoint.convert import read_official
from srkd.errors import SrkdError
from srkd.models.pan_arch import LAYOUT_MARKER, PAN, infer_kwargs
from srkd.models.taps import FeatureTaps

PARAMS = {2: 261_403, 3: 261_403, 4: 272_419}
SET5_PSNR = {2: 38.018, 3: 34.412, 4: 32.140}  # MANIFEST "srkd LR"
STUDENT = dict(num_feat=10, num_up_feat=6, num_block=4)  # quarter width, a quarter of the blocks


def official_state(scale: int) -> dict[str, torch.Tensor]:
    path = shared_path("weights", "pan", f"PANx{scale}_DF2K.pth")
    return read_official(path)  # wrapper and DataParallel prefix removed, as srkd convert reads it


def load_official(scale: int) -> PAN:
    state = official_state(scale)
    kwargs = infer_kwargs(state)
    assert kwargs.get("scale", scale) == scale
    model = PAN(**{"scale": scale, **kwargs})
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(17, 23), (1, 1), (2, 3)])
def test_output_shape_at_odd_and_tiny_sizes(scale, size):
    model = PAN(scale=scale, **STUDENT).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, scale * size[0], scale * size[1])
    assert model.scale == scale and model.colour == "rgb" and not model.upsample_input


def test_y_channel_model():
    model = PAN(scale=3, in_channels=1, **STUDENT).eval()
    assert model.colour == "y"
    assert model(torch.rand(1, 1, 5, 7)).shape == (1, 1, 15, 21)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_published_parameter_counts(scale):
    assert sum(p.numel() for p in PAN(scale=scale).parameters()) == PARAMS[scale]


@pytest.mark.parametrize("img_range", [1.0, 255.0])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_skip_path_is_the_published_bilinear_upscale(scale, img_range):
    """With the last conv zeroed the output is the input's bilinear (align_corners=False) upscale, in [0, 1]
    scale whatever img_range is: that is the path the 0.02 dB target and the ONNX Resize depend on."""
    model = PAN(scale=scale, img_range=img_range, **STUDENT).eval()
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
        x = torch.rand(1, 3, 9, 11)
        expected = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)


def test_layout_marker_matches_only_pan_keys():
    pan_keys = [f"SCPA_trunk.{i}.PAConv.k2.weight" for i in range(16)]
    others = [
        "B1.c1_d.weight", "B1.esa.conv1.weight", "fea_conv.weight", "conv_first.weight", "to_feat.weight",
        "feats.1.layers.0.fmb.smfa.alpha", "head.0.weight", "body.0.body.0.weight", "entry.weight",
        "layers.0.residual_group.blocks.0.attn.qkv.weight", "residual_layer.0.conv.weight",
        "conv_1.eval_conv.weight", "block_1.c1_r.eval_conv.weight", "IMDB1.c1.weight", "upconv1.weight",
    ]
    assert all(re.fullmatch(LAYOUT_MARKER, k) for k in pan_keys)
    assert not any(re.fullmatch(LAYOUT_MARKER, k) for k in others)


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_loads_strictly_through_infer_kwargs(scale):
    state = official_state(scale)
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in state)
    kwargs = infer_kwargs(state)
    assert kwargs == {"num_feat": 40, "num_up_feat": 24, "num_block": 16, "in_channels": 3,
                      **({"scale": 4} if scale == 4 else {})}
    # x2 and x3 have the same shapes, so the kwargs alone (scale left to the default) must load too.
    PAN(**kwargs).load_state_dict(state, strict=True)
    model = load_official(scale)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[scale]


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_reproduces_set5_psnr(scale, set5_hr: Path):
    from srkd.evaluation.evaluate import evaluate_model

    res = evaluate_model(load_official(scale), [set5_hr], scale, progress=False)
    psnr = res[next(iter(res))]["psnr_y"]
    assert abs(psnr - SET5_PSNR[scale]) < 0.02, psnr


@pytest.mark.parametrize("scale", [3, 4])
def test_bf16_autocast_forward_backward_is_finite(scale):
    torch.manual_seed(0)
    model = PAN(scale=scale, **STUDENT)
    x = torch.rand(2, 3, 12, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = (out.float() - torch.rand_like(out, dtype=torch.float32)).abs().mean()
    loss.backward()
    assert out.dtype == torch.float32  # the residual stream and output are kept in fp32
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = PAN(scale=3, **STUDENT).eval()
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the contract asks for the TorchScript exporter
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_onnx_export_with_dynamic_size_matches_torch(tmp_path, scale):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = PAN(scale=scale, num_block=2).eval()
    path = tmp_path / "pan.onnx"
    axes = {0: "n", 2: "h", 3: "w"}
    torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), str(path), opset_version=17, dynamo=False,
                      input_names=["lr"], output_names=["sr"], dynamic_axes={"lr": axes, "sr": axes})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(13, 21), (5, 8)]:
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"lr": x.numpy()})[0]
        assert got.shape == ref.shape
        assert abs(got - ref).max() < 1e-4


def test_state_dict_round_trip():
    torch.manual_seed(0)
    model = PAN(scale=4, **STUDENT).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = PAN(scale=4, **STUDENT).eval()
    other.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_quarter_width_student_trains_one_step_with_feature_taps():
    torch.manual_seed(0)
    student = PAN(scale=4, **STUDENT)
    taps = student.feature_taps()
    assert list(taps) == ["head", "body.0", "body.1", "body.2", "body.3", "body"]
    assert taps["head"] == "conv_first" and taps["body"] == "trunk_conv" and taps["body.2"] == "SCPA_trunk.2"
    for path in taps.values():
        student.get_submodule(path)
    optim = torch.optim.Adam(student.parameters(), lr=1e-3)
    lr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 48, 48)
    paths = list(taps.values())
    with FeatureTaps(student, paths) as recorded:
        sr = student(lr)
    feats = [recorded.features[p] for p in paths]
    loss = F.l1_loss(sr, hr) + sum(f.square().mean() for f in feats) * 1e-3
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    optim.step()


def test_identity_blocks_pass_their_input_through():
    model = PAN(scale=2, **STUDENT).eval()
    for block in model.SCPA_trunk:
        block.identity_()
    x = torch.rand(1, 10, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(model.SCPA_trunk(x), x, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scale=8), "unsupported scale 8"),
        (dict(scale=1), "unsupported scale 1"),
        (dict(num_feat=41), "num_feat must be even"),
        (dict(num_block=0), "must be >= 1"),
        (dict(num_up_feat=0), "must be >= 1"),
        (dict(img_range=0.0), "img_range must be > 0"),
    ],
)
def test_bad_kwargs_raise_srkd_error(kwargs, message):
    with pytest.raises(SrkdError, match=message):
        PAN(**kwargs)


def test_infer_kwargs_rejects_a_state_without_blocks():
    state = {"conv_first.weight": torch.zeros(40, 3, 3, 3), "upconv1.weight": torch.zeros(24, 40, 3, 3)}
    with pytest.raises(ValueError, match="SCPA_trunk"):
        infer_kwargs(state)
