"""IMDN: published sizes and Set5 figures (MANIFEST), strict loading of the official checkpoints, layout detection,
any input size, bf16 autocast, channels_last, ONNX parity, a trainable quarter-width student."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import shared_path

from srkd.checkpoint.convert import read_official
from srkd.errors import SrkdError
from srkd.models import build_model
from srkd.models.imdn_arch import IMDN, LAYOUT_MARKER, MULTI_SCALE, infer_kwargs
from srkd.models.taps import FeatureTaps

PUBLISHED = {2: (694_404, 38.006), 3: (703_059, 34.364), 4: (715_176, 32.205)}  # MANIFEST: params, Set5 srkd LR
STUDENT = dict(num_feat=16, num_block=2)  # quarter width, a third of the blocks
OTHER_LAYOUTS = {  # every other published checkpoint in ../shared/weights
    "bsrn": ["net_g_BSRN_x2.pth", "net_g_BSRN_x3.pth", "net_g_BSRN_x4.pth"],
    "smfanet": ["SMFANet_DF2K_100w_x4SR.pth", "SMFANet_plus_DF2K_100w_x4SR.pth"],
    "carn": ["carn_m.pth"],
    "pan": ["PANx2_DF2K.pth", "PANx4_DF2K.pth"],
    "rfdn": ["RFDN_AIM.pth"],
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


def published(scale: int) -> tuple[IMDN, dict[str, torch.Tensor]]:
    state = load_official(shared_path("weights", "imdn", f"IMDN_x{scale}.pth"))
    model = IMDN(**infer_kwargs(state))
    model.load_state_dict(state, strict=True)
    return model.eval(), state


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes_at_odd_and_tiny_sizes(scale: int) -> None:
    model = IMDN(scale=scale, **STUDENT).eval()
    assert (model.scale, model.colour, model.upsample_input, model.img_range) == (scale, "rgb", False, 1.0)
    with torch.no_grad():
        for h, w in [(17, 23), (3, 5), (1, 1)]:
            assert model(torch.rand(2, 3, h, w)).shape == (2, 3, scale * h, scale * w)
    y = IMDN(scale=scale, in_channels=1, **STUDENT)
    assert y.colour == "y" and y(torch.rand(1, 1, 9, 7)).shape == (1, 1, 9 * scale, 7 * scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_published_parameter_counts(scale: int) -> None:
    with torch.device("meta"):
        model = IMDN(scale=scale)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[scale][0]


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_loads_strictly_and_is_detected(scale: int) -> None:
    model, state = published(scale)
    assert infer_kwargs(state) == dict(scale=scale, num_feat=64, num_block=6, reduction=16, in_channels=3,
                                       img_range=1.0)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[scale][0]
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in state)
    raw = torch.load(shared_path("weights", "imdn", f"IMDN_x{scale}.pth"), map_location="cpu", weights_only=True)
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in raw)  # with the DataParallel prefix too
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
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_reproduces_set5(scale: int, set5_hr: Path) -> None:
    from srkd.evaluation.evaluate import evaluate_model

    model, _ = published(scale)
    res = evaluate_model(model, [set5_hr], scale, progress=False)
    assert res[next(iter(res))]["psnr_y"] == pytest.approx(PUBLISHED[scale][1], abs=0.02)


def test_student_trains_one_step_even_on_flat_and_1px_inputs() -> None:
    """CCA's std has an infinite derivative on a constant channel in the official code; ours stays finite."""
    torch.manual_seed(0)
    model = IMDN(scale=4, **STUDENT)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for lr in (torch.rand(2, 3, 12, 12), torch.full((2, 3, 12, 12), 0.5), torch.rand(2, 3, 1, 1)):
        loss = (model(lr) - torch.rand(2, 3, 4 * lr.shape[2], 4 * lr.shape[3])).abs().mean()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()


def test_bf16_autocast_forward_backward_is_finite() -> None:
    model = IMDN(scale=2, **STUDENT)
    x = torch.rand(2, 3, 16, 16)
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
    model = IMDN(scale=3, **STUDENT).eval()
    x = torch.rand(1, 3, 11, 13)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
        state = model.state_dict()
        rebuilt = IMDN(**infer_kwargs(state))
        rebuilt.load_state_dict(state, strict=True)
        torch.testing.assert_close(rebuilt.eval()(x), ref, atol=1e-6, rtol=0)
    assert infer_kwargs(state) == dict(scale=3, num_feat=16, num_block=2, reduction=16, in_channels=3,
                                       img_range=1.0)


def test_onnx_dynamic_export_matches_torch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = IMDN(scale=2, num_feat=32, num_block=3).eval()
    path = tmp_path / "imdn.onnx"
    axes = {2: "h", 3: "w"}
    torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), str(path), opset_version=17, dynamo=False,
                      input_names=["lr"], output_names=["sr"], dynamic_axes={"lr": axes, "sr": axes})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(16, 16), (9, 21), (1, 1)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"lr": x.numpy()})[0]
        assert got.shape == ref.shape and abs(got - ref).max() < 1e-4


def test_feature_taps_resolve_and_record() -> None:
    model = IMDN(scale=2, num_feat=16, num_block=6)
    taps = model.feature_taps()
    assert list(taps) == ["head", *(f"body.{i}" for i in range(6)), "body"]
    assert taps["head"] == "fea_conv" and taps["body.5"] == "IMDB6" and taps["body"] == "LR_conv"
    with FeatureTaps(model, taps.values()) as rec:
        model(torch.rand(1, 3, 8, 8))
    assert all(rec.features[p].shape == (1, 16, 8, 8) for p in taps.values())


@pytest.mark.parametrize(
    "kwargs",
    [dict(scale=5), dict(scale=1), dict(num_feat=18), dict(num_feat=8), dict(num_block=0), dict(reduction=0),
     dict(in_channels=0)],
)
def test_bad_sizes_raise_srkd_error(kwargs: dict) -> None:
    with pytest.raises(SrkdError, match="IMDN"):
        IMDN(**{"scale": 4, **kwargs})


def test_infer_kwargs_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="not an IMDN"):
        infer_kwargs({"conv_first.weight": torch.zeros(64, 3, 3, 3)})
