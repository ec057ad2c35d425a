"""BSRN: shapes at every scale and at sizes below ESA's 15 px, published parameter counts, strict loading and Set5
PSNR of the authors' checkpoints, bf16 autocast, channels_last, ONNX parity, students and feature taps."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import shared_path

from srkd.checkpoint.convert import read_official
from srkd.errors import SrkdError
from srkd.models.bsrn_arch import BSRN, DROPPED_KEYS, ESA_MIN_SIZE, LAYOUT_MARKER, MULTI_SCALE, infer_kwargs
from srkd.models.edsr_arch import EDSR
from srkd.models.rcan_arch import RCAN
from srkd.models.swinir_arch import SwinIR
from srkd.models.taps import FeatureTaps
from srkd.models.vdsr_arch import VDSR

PARAMS = {2: 331_628, 3: 340_283, 4: 352_400}  # MANIFEST.md
SET5_PSNR = {2: 38.099, 3: 34.460, 4: 32.351}  # MANIFEST.md, "srkd LR"
QUARTER = dict(num_feat=16, num_block=2)


def official_state(scale: int) -> dict[str, torch.Tensor]:
    path = shared_path("weights", "bsrn", f"net_g_BSRN_x{scale}.pth")
    return read_official(path)  # wrapper and DataParallel prefix removed, as srkd convert reads it


def official_model(scale: int) -> BSRN:
    state = official_state(scale)
    model = BSRN(**infer_kwargs(state))
    model.load_state_dict(state, strict=True)
    return model.eval()


def quarter(scale: int = 2, **kw: object) -> BSRN:
    torch.manual_seed(0)
    return BSRN(scale=scale, **QUARTER, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_published_parameter_counts_and_shapes_on_odd_sizes(scale):
    model = BSRN(scale=scale).eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[scale]
    assert model.scale == scale and model.colour == "rgb" and model.upsample_input is False
    with torch.no_grad():
        out = model(torch.rand(2, 3, 17, 23))
    assert out.shape == (2, 3, 17 * scale, 23 * scale)


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (12, 12), (14, 40), (15, 15)])
def test_inputs_below_esa_minimum_work(size):
    """The published ESA fails under 15 px; here it pads its coarse branch (DUKD zoom-out patches are 12x12)."""
    model = quarter(4).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, 4 * size[0], 4 * size[1]) and torch.isfinite(out).all()


def test_esa_pads_only_below_its_minimum_and_crops_back():
    esa = quarter().B1.esa
    c1 = torch.rand(1, 4, ESA_MIN_SIZE, 20)
    coarse = esa.coarse(c1)
    assert coarse.shape == (1, 4, ESA_MIN_SIZE, 20)
    # A small map is processed as its replicate-padded version, cropped: same values as padding by hand.
    small = c1[..., :9, :12]
    padded = torch.nn.functional.pad(small, (0, ESA_MIN_SIZE - 12, 0, ESA_MIN_SIZE - 9), mode="replicate")
    torch.testing.assert_close(esa.coarse(small), esa.coarse(padded)[..., :9, :12])


def test_img_range_and_y_channel():
    model = quarter(3, in_channels=1, img_range=255.0).eval()
    assert model.colour == "y" and model.img_range == 255.0
    assert model.fea_conv.pw.weight.shape[1] == 4  # the image is repeated 4x along channels
    with torch.no_grad():
        assert model(torch.rand(1, 1, 9, 10)).shape == (1, 1, 27, 30)


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_loads_strictly_through_infer_kwargs(scale):
    state = official_state(scale)
    kwargs = infer_kwargs(state)
    assert kwargs == {"scale": scale, "num_feat": 64, "num_block": 8, "in_channels": 3}
    model = BSRN(**kwargs)
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[scale]
    assert DROPPED_KEYS is None and MULTI_SCALE is False
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in state)


@pytest.mark.shared
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_reproduces_set5_psnr(scale, set5_hr):
    from srkd.evaluation.evaluate import evaluate_model

    res = evaluate_model(official_model(scale), [set5_hr], scale, progress=False)
    psnr = res[next(iter(res))]["psnr_y"]
    assert abs(psnr - SET5_PSNR[scale]) < 0.02, psnr


def _foreign_keys() -> list[str]:
    """Keys of the other layouts: srkd's own models plus the lightweight nets' distinctive keys."""
    tiny = [
        EDSR(scale=2, n_feats=8, n_resblocks=1),
        RCAN(scale=2, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4),
        SwinIR(scale=2, embed_dim=12, depths=[1], num_heads=[2]),
        VDSR(n_feats=8, n_layers=3),
    ]
    keys = [k for m in tiny for k in m.state_dict()]
    return keys + [
        "fea_conv.weight", "B1.c1_r.weight", "B1.esa.conv3_.weight", "B1.esa.conv_max.weight",  # RFDN
        "module.fea_conv.weight", "module.IMDB1.c1.weight",  # IMDN
        "upsampler.0.weight", "c.weight", "LR_conv.weight",
    ]


def test_layout_marker_matches_no_other_layout():
    assert not [k for k in _foreign_keys() if re.fullmatch(LAYOUT_MARKER, k)]
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in quarter().state_dict())


def test_infer_kwargs_round_trip_and_errors():
    model = quarter(3, in_channels=1)
    state = model.state_dict()
    kwargs = infer_kwargs(state)
    assert kwargs == {"scale": 3, "num_feat": 16, "num_block": 2, "in_channels": 1}
    BSRN(**kwargs).load_state_dict(state, strict=True)
    with pytest.raises(ValueError, match="B1 ... B<n>"):
        infer_kwargs({k: v for k, v in state.items() if not k.startswith("B1.")})
    with pytest.raises(ValueError, match="no"):
        infer_kwargs({k: v for k, v in state.items() if not k.startswith("upsampler.")})


def test_state_dict_round_trip():
    model = quarter(2).eval()
    twin = BSRN(scale=2, **QUARTER).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 18)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


def test_bf16_autocast_forward_backward_is_finite():
    model = quarter(4)
    x = torch.rand(2, 3, 20, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.float().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_channels_last_matches_contiguous():
    model = quarter(3).eval()
    x = torch.rand(1, 3, 19, 17)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_onnx_dynamic_export_matches_pytorch_including_small_inputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = quarter(3).eval()
    path = tmp_path / "bsrn.onnx"
    axes = {0: "n", 2: "h", 3: "w"}
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.rand(1, 3, 24, 32),), str(path), dynamo=False, opset_version=17,
            input_names=["lr"], output_names=["sr"], dynamic_axes={"lr": axes, "sr": axes},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 24, 32), (2, 3, 41, 19), (1, 3, 12, 12), (1, 3, 3, 20)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"lr": x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4, shape


def test_quarter_width_student_trains_one_step():
    model = quarter(4).train()
    assert sum(p.numel() for p in model.parameters()) < PARAMS[4] / 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 48, 48)
    loss = torch.nn.functional.l1_loss(model(lr), hr)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()


def test_identity_block_returns_its_input_and_still_trains():
    """A zeroed block feeds CCA a constant map, whose std has an infinite derivative without the floor."""
    model = quarter(2)
    block = model.B2
    block.identity_()
    x = torch.rand(1, 16, 10, 11, requires_grad=True)
    out = block(x)
    torch.testing.assert_close(out, x)
    model(torch.rand(1, 3, 10, 11)).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_feature_taps_resolve_and_record():
    model = quarter(2)
    taps = model.feature_taps()
    assert list(taps) == ["head", "body.0", "body.1", "body"]
    assert taps == {"head": "fea_conv", "body.0": "B1", "body.1": "B2", "body": "c2"}
    assert list(BSRN(scale=4).feature_taps().values())[1:9] == [f"B{i}" for i in range(1, 9)]
    with FeatureTaps(model, list(taps.values())) as rec:
        model(torch.rand(1, 3, 8, 9))
    assert all(rec.features[p].shape == (1, 16, 8, 9) for p in taps.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale=1), "scale"),
        (dict(scale=9), "scale"),
        (dict(scale=4, num_feat=8), "num_feat"),
        (dict(scale=4, num_block=0), "num_block"),
        (dict(scale=4, in_channels=0), "in_channels"),
    ],
)
def test_bad_sizes_raise_srkd_error(kwargs, match):
    with pytest.raises(SrkdError, match=match):
        BSRN(**kwargs)
