"""CARN-M: shapes, the published multi-scale checkpoint (strict load, Set5 PSNR at x2/x3/x4), scale switching,
bf16, channels_last, ONNX, a quarter-width student, feature taps and clean errors."""

from __future__ import annotations

import io
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from srkd.checkpoint.convert import read_official
from srkd.errors import SrkdError
from srkd.models.carn_arch import CARNM, DROPPED_KEYS, LAYOUT_MARKER, MULTI_SCALE, infer_kwargs
from srkd.models.taps import FeatureTaps

PUBLISHED_PARAMS = 414_811  # MANIFEST, counting the two frozen 1x1 mean-shift convs (2 x (9 + 3))
SET5_PSNR = {2: 37.695, 3: 34.068, 4: 31.881}  # MANIFEST "srkd LR"
STUDENT = dict(num_feat=16, num_block=3, num_unit=3, group=4)  # quarter width


def official_state() -> dict[str, torch.Tensor]:
    path = shared_path("weights", "carn", "carn_m.pth")
    return read_official(path)  # wrapper and DataParallel prefix removed, as srkd convert reads it


def kept(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not re.fullmatch(DROPPED_KEYS, k)}


@pytest.fixture(scope="module")
def official() -> CARNM:
    state = official_state()
    model = CARNM(**infer_kwargs(state))
    model.load_state_dict(kept(state), strict=True)
    return model.eval()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(17, 23), (1, 1), (2, 3)])
def test_output_shape_at_odd_and_tiny_sizes(scale, size):
    model = CARNM(scale=scale, **STUDENT).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, scale * size[0], scale * size[1])
    assert (model.scale, model.colour, model.upsample_input, model.img_range) == (scale, "rgb", False, 1.0)


def test_one_network_switches_heads_through_the_scale_attribute():
    model = CARNM(scale=2, **STUDENT).eval()
    assert MULTI_SCALE and model.scales == (2, 3, 4)
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        for s in (4, 3, 2):
            model.scale = s
            assert model(x).shape == (1, 3, 5 * s, 7 * s)


def test_only_the_requested_heads_exist():
    model = CARNM(scale=4, scales=(4,), **STUDENT)
    assert {k.split(".")[1] for k in model.state_dict() if k.startswith("upsample.")} == {"up4"}
    assert len(model.upsample.up4.body) == 6  # two (conv, ReLU, shuffle-by-2) stages
    model.scale = 2
    with pytest.raises(SrkdError, match=r"scale is 2.*heads x4 only"):
        model(torch.rand(1, 3, 4, 4))


def test_y_channel_model():
    model = CARNM(scale=3, in_channels=1, **STUDENT).eval()
    assert model.colour == "y"
    assert model(torch.rand(1, 1, 5, 7)).shape == (1, 1, 15, 21)


def test_published_parameter_count_and_shared_units():
    model = CARNM()
    ours = sum(p.numel() for p in model.parameters())
    assert ours == 414_787
    assert ours + 2 * (9 + 3) == PUBLISHED_PARAMS  # + the dropped, frozen mean-shift convs
    # one residual unit per block, applied three times: its weights appear once in the state dict
    inside = {k.split(".")[1] for k in model.state_dict() if re.match(r"b\d\.", k)}
    assert sorted(inside) == ["b1", "c1", "c2", "c3"]
    assert model.b1.b1.body[0].groups == 4 and model.upsample.up3.body[0].groups == 4


@pytest.mark.parametrize(("scale", "gmacs"), [(2, 91.2), (3, 46.1), (4, 32.5)])
def test_mult_adds_match_the_paper(scale, gmacs):
    """CARN paper Table 1: CARN-M Mult-Adds for a 1280x720 output."""
    from srkd.models.profile import count_flops

    model = CARNM(scale=scale)
    assert round(count_flops(model, (3, 720 // scale, 1280 // scale)) / 1e9, 1) == gmacs


def test_mean_shift_is_not_in_the_state_dict():
    keys = CARNM().state_dict().keys()
    assert not any("mean" in k for k in keys)


@pytest.mark.shared
def test_official_checkpoint_loads_strictly_through_infer_kwargs():
    state = official_state()
    kwargs = infer_kwargs(state)
    published = dict(num_feat=64, num_block=3, num_unit=3, group=4, in_channels=3)
    assert kwargs == dict(scale=2, scales=(2, 3, 4), **published)
    dropped = {k for k in state if re.fullmatch(DROPPED_KEYS, k)}
    assert dropped == {f"{m}_mean.shifter.{p}" for m in ("sub", "add") for p in ("weight", "bias")}
    CARNM(**kwargs).load_state_dict(kept(state), strict=True)
    assert sum(v.numel() for v in state.values()) == PUBLISHED_PARAMS
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in state)


@pytest.mark.shared
def test_infer_kwargs_rejects_other_mean_shifts():
    state = official_state()
    state["add_mean.shifter.bias"] = state["add_mean.shifter.bias"] + 0.01
    with pytest.raises(ValueError, match="add_mean.shifter.bias"):
        infer_kwargs(state)
    state = official_state()
    state["sub_mean.shifter.weight"] = 2 * state["sub_mean.shifter.weight"]
    with pytest.raises(ValueError, match="identity"):
        infer_kwargs(state)


def test_layout_marker_is_ours_only():
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in CARNM(**STUDENT).state_dict())
    others = [
        "b1.b1.body.0.weight", "b1.b2.body.2.weight", "b1.c1.body.0.weight",  # full-size CARN's blocks
        "B1.c1_d.weight", "B1.c1_r.weight", "fea_conv.weight", "IMDB1.c1.weight",
        "SCPA_trunk.0.conv1_a.weight",
        "feats.0.smfa.linear_0.weight", "body.0.body.4.weight", "body.0.body.0.body.4.weight",
        "layers.0.residual_group.blocks.0.attn.qkv.weight", "residual_layer.0.conv.weight", "head.0.weight",
    ]
    assert not any(re.fullmatch(LAYOUT_MARKER, k) for k in others)


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_reproduces_set5_psnr(official, scale):
    from srkd.evaluation.evaluate import evaluate_model

    official.scale = scale
    res = evaluate_model(official, [shared_path("data", "benchmarks", "Set5", "HR")], scale, progress=False)
    assert res[next(iter(res))]["psnr_y"] == pytest.approx(SET5_PSNR[scale], abs=0.02)


def test_bf16_autocast_forward_backward_is_finite():
    model = CARNM(scale=3, **STUDENT)
    x = torch.rand(2, 3, 12, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = F.l1_loss(out.float(), torch.rand(2, 3, 36, 30))
    loss.backward()
    assert torch.isfinite(out.float()).all()
    for name, p in model.named_parameters():
        if name.startswith(("upsample.up2.", "upsample.up4.")):
            assert p.grad is None, name  # heads of other scales take no part in this forward
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_channels_last_matches_contiguous():
    model = CARNM(scale=2, **STUDENT).eval()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        ref = model(x)
        fast = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trip():
    model = CARNM(scale=4, **STUDENT).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    again = CARNM(scale=4, **STUDENT).eval()
    again.load_state_dict(torch.load(buf, weights_only=True), strict=True)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert infer_kwargs(model.state_dict()) == dict(scale=2, scales=(2, 3, 4), in_channels=3, **STUDENT)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_onnx_export_matches_torch_with_dynamic_size(tmp_path, scale):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = CARNM(scale=2, **STUDENT).eval()
    model.scale = scale  # the head exported is the one the attribute selects
    path = tmp_path / f"carn_x{scale}.onnx"
    axes = {2: "h", 3: "w"}
    torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), str(path), opset_version=17, dynamo=False,
                      input_names=["lr"], output_names=["sr"], dynamic_axes={"lr": axes, "sr": axes})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(16, 16), (13, 21)]:
        x = torch.rand(1, 3, h, w)
        got = session.run(None, {"lr": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (1, 3, scale * h, scale * w)
        assert abs(got - want).max() < 1e-4


def test_quarter_width_student_trains_one_step():
    torch.manual_seed(0)
    student = CARNM(scale=4, scales=(4,), **STUDENT)  # one head: every parameter gets a gradient
    assert sum(p.numel() for p in student.parameters()) < 414_787 / 10
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    lr_img, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 48, 48)
    loss = F.l1_loss(student(lr_img), hr)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    optimizer.step()
    assert torch.isfinite(F.l1_loss(student(lr_img), hr))


def test_feature_taps_resolve_and_record_the_cascade():
    model = CARNM(scale=2, num_block=4, **{k: v for k, v in STUDENT.items() if k != "num_block"}).eval()
    taps = model.feature_taps()
    blocks = {f"body.{i}": f"b{i + 1}" for i in range(4)}
    assert taps == {"head": "entry", **blocks, "body": "c4"}
    with FeatureTaps(model, taps.values()) as hooks, torch.no_grad():
        model(torch.rand(1, 3, 7, 9))
    assert all(hooks.features[p].shape == (1, 16, 7, 9) for p in taps.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(scale=5), "scale 5 has no upsampler head"),
        (dict(scale=2, scales=(2, 6)), "subset of"),
        (dict(scale=2, scales=()), "subset of"),
        (dict(num_feat=18, group=4), "multiple of group"),
        (dict(num_block=0), ">= 1"),
        (dict(group=0), ">= 1"),
        (dict(in_channels=2), "in_channels"),
    ],
)
def test_bad_kwargs_raise_srkd_error(kwargs, message):
    with pytest.raises(SrkdError, match=message):
        CARNM(**kwargs)
