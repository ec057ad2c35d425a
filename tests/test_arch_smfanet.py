"""SMFANet / SMFANet+: shapes at any size, published sizes and checkpoints, Set5 PSNR, bf16, ONNX, students"""

from __future__ import annotations

import io
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from srkd.checkpoint.convert import read_official
from srkd.errors import SrkdError
from srkd.models.smfanet_arch import LAYOUT_MARKER, SMFANet, _nearest_export, _pool_bins_export, infer_kwargs
from srkd.models.taps import FeatureTaps

PLUS = dict(dim=48, n_blocks=12)
# (file stem, kwargs, scale, exact params, MANIFEST Set5 "srkd LR" PSNR)
PUBLISHED = [
    ("SMFANet_DF2K_100w_x2SR", {}, 2, 185_628, 38.097),
    ("SMFANet_DF2K_100w_x3SR", {}, 3, 190_503, 34.426),
    ("SMFANet_DF2K_100w_x4SR", {}, 4, 197_328, 32.243),
    ("SMFANet_plus_DF2K_100w_x2SR", PLUS, 2, 480_300, 38.203),
    ("SMFANet_plus_DF2K_100w_x3SR", PLUS, 3, 486_795, 34.667),
    ("SMFANet_plus_DF2K_100w_x4SR", PLUS, 4, 495_888, 32.512),
]
IDS = [p[0] for p in PUBLISHED]
# Keys of the other published layouts that look closest to SMFANet's (SAFMN shares to_feat/feats/to_img).
OTHER_KEYS = [
    "to_feat.weight", "feats.0.safm.mfr.0.weight", "feats.0.safm.aggr.weight", "feats.0.ccm.ccm.0.weight",
    "to_img.0.weight", "norm.gamma", "B1.c1_d.weight", "fea_conv.pw.weight", "conv_first.weight",
    "conv_1.eval_conv.weight", "head.0.weight", "body.0.body.0.weight",
    "layers.0.residual_group.blocks.0.norm1.weight",
    "residual_layer.0.conv.weight", "IMDB1.c1.weight", "entry.weight",
]


def _small(scale: int = 2, **kwargs) -> SMFANet:
    torch.manual_seed(0)
    model = SMFANet(scale=scale, dim=kwargs.pop("dim", 8), n_blocks=kwargs.pop("n_blocks", 2), **kwargs)
    with torch.no_grad():  # the published init (alpha=1, belt=0) hides the variance branch; give it weight
        for block in model.feats:
            block.smfa.belt.normal_()
    return model


def _official(stem: str) -> dict[str, torch.Tensor]:
    path = shared_path("weights", "smfanet", f"{stem}.pth")
    return read_official(path)  # wrapper and DataParallel prefix removed, as srkd convert reads it


def _load(stem: str) -> SMFANet:
    state = _official(stem)
    model = SMFANet(**infer_kwargs(state))
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(17, 23), (12, 12), (7, 5), (1, 1), (1, 9), (57, 86)])
def test_output_shape_at_odd_and_tiny_sizes(scale, size) -> None:
    model = _small(scale).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, scale * size[0], scale * size[1])
    assert torch.isfinite(out).all()


def test_published_width_runs_at_an_odd_size() -> None:
    with torch.no_grad():
        assert SMFANet(scale=3, **PLUS).eval()(torch.rand(1, 3, 17, 23)).shape == (1, 3, 51, 69)


@pytest.mark.parametrize(("stem", "kwargs", "scale", "params", "psnr"), PUBLISHED, ids=IDS)
def test_exact_published_param_counts(stem, kwargs, scale, params, psnr) -> None:
    with torch.device("meta"):
        model = SMFANet(scale=scale, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("size", [(8, 8), (9, 9), (15, 31), (16, 17), (57, 86), (114, 172), (7, 40), (3, 1)])
def test_export_path_pools_and_upsamples_like_the_native_kernels(size) -> None:
    """The gather-based bins and nearest indices used under ONNX export are bit-identical to ATen's."""
    x = torch.randn(2, 4, *size)
    bins = (max(size[0] // 8, 1), max(size[1] // 8, 1))
    assert torch.equal(_pool_bins_export(_pool_bins_export(x, 2), 3), F.adaptive_max_pool2d(x, bins))
    gate = torch.randn(2, 4, *bins)
    native = F.interpolate(gate, size=size, mode="nearest")
    assert torch.equal(_nearest_export(_nearest_export(gate, 2, size[0]), 3, size[1]), native)


def test_layout_marker_is_specific() -> None:
    assert re.fullmatch(LAYOUT_MARKER, "feats.11.smfa.linear_0.weight")
    assert not any(re.fullmatch(LAYOUT_MARKER, k) for k in OTHER_KEYS)


@pytest.mark.shared
@pytest.mark.parametrize(("stem", "kwargs", "scale", "params", "psnr"), PUBLISHED, ids=IDS)
def test_published_checkpoint_loads_strictly(stem, kwargs, scale, params, psnr) -> None:
    state = _official(stem)
    assert any(re.fullmatch(LAYOUT_MARKER, k) for k in state)
    base = {"scale": scale, "dim": 36, "n_blocks": 8, "ffn_scale": 2.0, "in_channels": 3, "img_range": 1.0}
    assert infer_kwargs(state) == {**base, **kwargs}
    model = SMFANet(**infer_kwargs(state))
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.shared
@pytest.mark.parametrize(("stem", "kwargs", "scale", "params", "psnr"), PUBLISHED, ids=IDS)
def test_published_checkpoint_reproduces_set5_psnr(stem, kwargs, scale, params, psnr, set5_hr) -> None:
    from srkd.evaluation.evaluate import evaluate_model

    res = evaluate_model(_load(stem), [set5_hr], scale, progress=False)
    assert res[next(iter(res))]["psnr_y"] == pytest.approx(psnr, abs=0.02)


def test_bf16_autocast_forward_backward_is_finite() -> None:
    model = _small(3).train()
    x = torch.rand(2, 3, 13, 18)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 39, 54)  # fp32 stream and output
    (out - F.interpolate(x, scale_factor=3)).abs().mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_channels_last_matches_contiguous() -> None:
    model = _small(2).eval()
    x = torch.rand(1, 3, 19, 26)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)


def test_onnx_dynamic_size_matches_pytorch() -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = _small(4, dim=12).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.rand(1, 3, 20, 24),), buf, opset_version=17, dynamo=False,
            input_names=["lr"], output_names=["sr"],
            dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "H", 3: "W"}},
        )
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for size in [(20, 24), (17, 23), (57, 86), (12, 12), (5, 3), (1, 1)]:
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"lr": x.numpy()})[0]
        assert got.shape == ref.shape
        assert abs(got - ref).max() < 1e-4, size


def test_state_dict_round_trip_through_infer_kwargs() -> None:
    model = _small(3, dim=12, n_blocks=3, ffn_scale=3.0).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    expected = dict(scale=3, dim=12, n_blocks=3, ffn_scale=3.0, in_channels=3, img_range=1.0)
    assert infer_kwargs(state) == expected
    clone = SMFANet(**infer_kwargs(state)).eval()
    clone.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 11, 14)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_infer_kwargs_rejects_inconsistent_shapes() -> None:
    state = _small(2).state_dict()
    state["to_img.0.weight"] = torch.zeros(13, 8, 3, 3)
    with pytest.raises(ValueError, match="to_img"):
        infer_kwargs(state)


def test_quarter_width_student_trains_one_step() -> None:
    student = SMFANet(scale=4, dim=9, n_blocks=2)  # a quarter of SMFANet's 36 features
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    lr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 48, 48)
    loss = F.l1_loss(student(lr), hr)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    opt.step()
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_feature_taps_resolve_and_record() -> None:
    model = _small(2, n_blocks=3)
    taps = model.feature_taps()
    assert taps == {"head": "to_feat", "body.0": "feats.0", "body.1": "feats.1", "body.2": "feats.2",
                    "body": "feats.2"}
    for path in taps.values():
        model.get_submodule(path)
    assert model.body is model.feats and model.head is model.to_feat and model.tail is model.to_img
    assert not any(k.startswith(("body.", "head.", "tail.")) for k in model.state_dict())
    with FeatureTaps(model, list(taps.values())) as rec:
        model(torch.rand(1, 3, 10, 9))
    assert all(rec.features[p].shape == (1, 8, 10, 9) for p in taps.values())


def test_identity_block_computes_its_input() -> None:
    block = _small(2).feats[0]
    block.identity_()
    x = torch.randn(1, 8, 9, 10)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize(
    "kwargs",
    [dict(scale=0), dict(scale=2.5), dict(scale=True), dict(dim=0), dict(n_blocks=0),
     dict(dim=2, ffn_scale=1.0), dict(ffn_scale=0.0), dict(in_channels=0), dict(img_range=0.0)],
)
def test_bad_kwargs_raise_srkd_error(kwargs) -> None:
    with pytest.raises(SrkdError, match="SMFANet"):
        SMFANet(**{"scale": 2, **kwargs})
