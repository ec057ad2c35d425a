"""RFDN: published size and Set5 figure (MANIFEST), the 0-255 input range, strict loading of the official checkpoint,
layout detection (not BSRN's B<k>.*), small inputs through ESA, bf16 autocast, channels_last, ONNX parity, a
trainable quarter-width student."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from srkd.checkpoint.convert import read_official
from srkd.data.images import read_image
from srkd.errors import SrkdError
from srkd.models import build_model
from srkd.models.rfdn_arch import ESA, ESA_MIN_SIZE, LAYOUT_MARKER, MULTI_SCALE, RFDN, infer_kwargs
from srkd.models.taps import FeatureTaps

PARAMS, SET5_X4 = 433_448, 32.155  # MANIFEST: RFDN_AIM.pth, Set5 x4 srkd LR
STUDENT = dict(num_feat=12, num_block=2)  # quarter width, half the blocks
OTHER_LAYOUTS = {  # every other published checkpoint in ../shared/weights
    "bsrn": ["net_g_BSRN_x2.pth", "net_g_BSRN_x3.pth", "net_g_BSRN_x4.pth"],
    "smfanet": ["SMFANet_DF2K_100w_x4SR.pth", "SMFANet_plus_DF2K_100w_x4SR.pth"],
    "carn": ["carn_m.pth"],
    "pan": ["PANx2_DF2K.pth", "PANx4_DF2K.pth"],
    "imdn": ["IMDN_x2.pth", "IMDN_x3.pth", "IMDN_x4.pth"],
    "span": ["team38_span_ch28_slim.pth"],
    "safmn": ["team15_SAFMN.pth"],
}
# Official EDSR / RCAN / SwinIR / VDSR keys (their files are not in ../shared)
FOREIGN_KEYS = [
    "head.0.weight", "body.3.body.0.weight", "body.2.body.1.body.3.conv_du.0.weight", "conv_first.weight",
    "layers.0.residual_group.blocks.0.attn.qkv.weight", "residual_layer.4.conv.weight", "tail.0.0.weight",
]


def load_official(path: Path) -> dict[str, torch.Tensor]:
    return read_official(path)  # wrapper and DataParallel prefix removed, as srkd convert reads it


def published() -> tuple[RFDN, dict[str, torch.Tensor]]:
    state = load_official(shared_path("weights", "rfdn", "RFDN_AIM.pth"))
    model = RFDN(**infer_kwargs(state))
    model.load_state_dict(state, strict=True)
    return model.eval(), state


def official_esa(esa: ESA, x: torch.Tensor) -> torch.Tensor:
    """The published ESA forward, for inputs of at least 15 px."""
    c1_ = esa.conv1(x)
    c1 = esa.conv2(c1_)
    v = F.relu(esa.conv_max(F.max_pool2d(c1, kernel_size=7, stride=3)))
    c3 = esa.conv3_(F.relu(esa.conv3(v)))
    c3 = F.interpolate(c3, (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
    return x * torch.sigmoid(esa.conv4(c3 + esa.conv_f(c1_)))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes_at_odd_and_tiny_sizes(scale: int) -> None:
    model = RFDN(scale=scale, **STUDENT).eval()
    assert (model.scale, model.colour, model.upsample_input, model.img_range) == (scale, "rgb", False, 255.0)
    with torch.no_grad():
        for h, w in [(17, 23), (12, 12), (14, 40), (3, 5), (1, 1)]:
            assert model(torch.rand(2, 3, h, w)).shape == (2, 3, scale * h, scale * w)
    y = RFDN(scale=scale, in_channels=1, **STUDENT)
    assert y.colour == "y" and y(torch.rand(1, 1, 9, 7)).shape == (1, 1, 9 * scale, 7 * scale)


def test_esa_is_official_at_15px_and_on_an_edge_extended_map_below() -> None:
    torch.manual_seed(0)
    esa = ESA(16).eval()
    with torch.no_grad():
        for h, w in [(ESA_MIN_SIZE, ESA_MIN_SIZE), (17, 23)]:
            x = torch.randn(1, 16, h, w)
            torch.testing.assert_close(esa(x), official_esa(esa, x))
        x = torch.randn(1, 16, 12, 9)
        padded = F.pad(x, [0, ESA_MIN_SIZE - 9, 0, ESA_MIN_SIZE - 12], mode="replicate")
        torch.testing.assert_close(esa(x), official_esa(esa, padded)[:, :, :12, :9])


def test_published_parameter_count() -> None:
    with torch.device("meta"):
        model = RFDN()
    assert model.scale == 4 and sum(p.numel() for p in model.parameters()) == PARAMS


@pytest.mark.shared
def test_official_checkpoint_loads_strictly_and_is_detected() -> None:
    model, state = published()
    assert infer_kwargs(state) == dict(scale=4, num_feat=50, num_block=4, in_channels=3, img_range=255.0)
    assert sum(p.numel() for p in model.parameters()) == PARAMS
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in state)
    assert not MULTI_SCALE


@pytest.mark.shared
def test_layout_marker_matches_no_other_layout() -> None:
    for folder, files in OTHER_LAYOUTS.items():
        for name in files:
            keys = load_official(shared_path("weights", folder, name))
            assert not [k for k in keys if re.fullmatch(LAYOUT_MARKER, k)], name
    assert not [k for k in FOREIGN_KEYS if re.fullmatch(LAYOUT_MARKER, k)]
    for arch in ("edsr", "rcan", "swinir", "vdsr"):
        with torch.device("meta"):
            keys = build_model(arch, scale=2).state_dict()
        assert not [k for k in keys if re.fullmatch(LAYOUT_MARKER, k)], arch


@pytest.mark.shared
def test_official_checkpoint_reproduces_set5_in_the_0_255_range(set5_hr: Path) -> None:
    from srkd.evaluation.evaluate import evaluate_model

    model, state = published()
    res = evaluate_model(model, [set5_hr], 4, progress=False)
    assert res[next(iter(res))]["psnr_y"] == pytest.approx(SET5_X4, abs=0.02)
    unit = RFDN(**{**infer_kwargs(state), "img_range": 1.0})  # the same weights fed [0, 1]: about 26 dB
    unit.load_state_dict(state, strict=True)
    res = evaluate_model(unit.eval(), [set5_hr], 4, progress=False)
    assert res[next(iter(res))]["psnr_y"] < 28


@pytest.mark.shared
def test_published_weights_on_small_lr_patches(set5_hr: Path) -> None:
    """12 px LR patches (the x4 zoom-out of 48 px) run, and their centres agree with the same pixels of a larger run:
    the padded ESA only changes the attention's view of the patch, not what the network does with it."""
    model, _ = published()
    hr = read_image(set5_hr / "baby.png").float().div(255).unsqueeze(0)
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)[:, :, 40:100, 40:100]
    with torch.no_grad():
        full = model(lr)
        for y, x in [(20, 20), (5, 30), (40, 3)]:
            patch = model(lr[:, :, y : y + 12, x : x + 12])
            assert patch.shape == (1, 3, 48, 48)
            diff = patch - full[:, :, 4 * y : 4 * y + 48, 4 * x : 4 * x + 48]
            assert -10 * torch.log10(diff[:, :, 12:36, 12:36].pow(2).mean()) > 35, (y, x)


def test_student_trains_one_step() -> None:
    torch.manual_seed(0)
    model = RFDN(scale=4, **STUDENT)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for lr in (torch.rand(2, 3, 24, 24), torch.rand(2, 3, 12, 12), torch.full((2, 3, 5, 7), 0.5)):
        loss = (model(lr) - torch.rand(2, 3, 4 * lr.shape[2], 4 * lr.shape[3])).abs().mean()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()


def test_bf16_autocast_forward_backward_is_finite() -> None:
    model = RFDN(scale=4, **STUDENT)
    x = torch.rand(2, 3, 12, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32  # the fp32 stream
    out.float().mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    ref = model(x)
    assert (out - ref).abs().max() < 0.05


def test_channels_last_and_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = RFDN(scale=3, **STUDENT).eval()
    x = torch.rand(1, 3, 11, 19)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
        state = model.state_dict()
        rebuilt = RFDN(**infer_kwargs(state))
        rebuilt.load_state_dict(state, strict=True)
        torch.testing.assert_close(rebuilt.eval()(x), ref, atol=1e-6, rtol=0)
    assert infer_kwargs(state) == dict(scale=3, num_feat=12, num_block=2, in_channels=3, img_range=255.0)


def test_onnx_dynamic_export_matches_torch_below_and_above_the_esa_minimum(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = RFDN(scale=4, num_feat=24, num_block=2).eval()
    path = tmp_path / "rfdn.onnx"
    axes = {2: "h", 3: "w"}
    torch.onnx.export(model, (torch.rand(1, 3, 20, 20),), str(path), opset_version=17, dynamo=False,
                      input_names=["lr"], output_names=["sr"], dynamic_axes={"lr": axes, "sr": axes})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(20, 20), (12, 12), (17, 31), (1, 40)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"lr": x.numpy()})[0]
        assert got.shape == ref.shape and abs(got - ref).max() < 1e-4, (h, w)


def test_feature_taps_resolve_and_record() -> None:
    model = RFDN(**STUDENT)
    taps = model.feature_taps()
    assert taps == {"head": "fea_conv", "body.0": "B1", "body.1": "B2", "body": "LR_conv"}
    with FeatureTaps(model, taps.values()) as rec:
        model(torch.rand(1, 3, 8, 8))
    assert all(rec.features[p].shape == (1, 12, 8, 8) for p in taps.values())


@pytest.mark.parametrize(
    "kwargs", [dict(scale=5), dict(scale=1), dict(num_feat=3), dict(num_block=0), dict(in_channels=0)]
)
def test_bad_sizes_raise_srkd_error(kwargs: dict) -> None:
    with pytest.raises(SrkdError, match="RFDN"):
        RFDN(**{"scale": 4, **kwargs})


def test_infer_kwargs_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="not an RFDN"):
        infer_kwargs({"conv_first.weight": torch.zeros(64, 3, 3, 3)})
