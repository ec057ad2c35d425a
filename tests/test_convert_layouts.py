"""Key mappings of ``srkd convert`` against hand-written official layouts.

Each test writes a fake official checkpoint whose key names and shapes are spelt out here from the official
architecture definitions (EDSR-PyTorch, RCAN, BasicSR, SwinIR), converts it, and checks the result: for EDSR and
RCAN by running the official computation directly on the official tensors (a few lines of ``F.conv2d``) and
comparing with the converted srkd model; for SwinIR tensor by tensor.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srkd.checkpoint import load_model
from srkd.checkpoint.convert import convert, parse_overrides
from srkd.cli.main import main
from srkd.errors import CheckpointError

MEAN = (0.45, 0.41, 0.37)  # not the DIV2K default, so the mean must be read from the official sub_mean layer


def _conv(sd: dict, name: str, cin: int, cout: int, k: int = 3) -> None:
    sd[f"{name}.weight"] = torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k)
    sd[f"{name}.bias"] = torch.randn(cout) * 0.05


def _upsampler(sd: dict, prefix: str, n_feats: int, scale: int) -> None:
    if scale == 3:
        _conv(sd, f"{prefix}0", n_feats, 9 * n_feats)
    else:
        for i in range(int(math.log2(scale))):
            _conv(sd, f"{prefix}{2 * i}", n_feats, 4 * n_feats)


def _mean_shift(sd: dict, rgb_range: float = 255.0) -> None:
    sd["sub_mean.weight"] = torch.eye(3).view(3, 3, 1, 1)
    sd["sub_mean.bias"] = -rgb_range * torch.tensor(MEAN)
    sd["add_mean.weight"] = torch.eye(3).view(3, 3, 1, 1)
    sd["add_mean.bias"] = rgb_range * torch.tensor(MEAN)


# --- official layouts -------------------------------------------------------------------------------------------


def edsr_pytorch_state(n_feats: int, n_resblocks: int, scale: int) -> dict:
    """EDSR-PyTorch ``model/edsr.py``: sub_mean, head.0, body.<i>.body.{0,2}, body.<n>, tail.0.<j>, tail.1, add_mean."""
    sd: dict = {}
    _mean_shift(sd)
    _conv(sd, "head.0", 3, n_feats)
    for i in range(n_resblocks):
        _conv(sd, f"body.{i}.body.0", n_feats, n_feats)
        _conv(sd, f"body.{i}.body.2", n_feats, n_feats)
    _conv(sd, f"body.{n_resblocks}", n_feats, n_feats)
    _upsampler(sd, "tail.0.", n_feats, scale)
    _conv(sd, "tail.1", n_feats, 3)
    return sd


def basicsr_edsr_state(n_feats: int, n_resblocks: int, scale: int) -> dict:
    """BasicSR ``archs/edsr_arch.py``: conv_first, body.<i>.conv{1,2}, conv_after_body, upsample.<j>, conv_last."""
    sd: dict = {}
    _conv(sd, "conv_first", 3, n_feats)
    for i in range(n_resblocks):
        _conv(sd, f"body.{i}.conv1", n_feats, n_feats)
        _conv(sd, f"body.{i}.conv2", n_feats, n_feats)
    _conv(sd, "conv_after_body", n_feats, n_feats)
    _upsampler(sd, "upsample.", n_feats, scale)
    _conv(sd, "conv_last", n_feats, 3)
    return sd


def rcan_official_state(n_feats: int, groups: int, blocks: int, reduction: int, scale: int) -> dict:
    """RCAN ``model/rcan.py``: body.<g>.body.<b>.body.{0,2,3.conv_du.{0,2}}, body.<g>.body.<blocks>, body.<groups>."""
    sd: dict = {}
    _mean_shift(sd)
    _conv(sd, "head.0", 3, n_feats)
    for g in range(groups):
        for b in range(blocks):
            p = f"body.{g}.body.{b}.body"
            _conv(sd, f"{p}.0", n_feats, n_feats)
            _conv(sd, f"{p}.2", n_feats, n_feats)
            _conv(sd, f"{p}.3.conv_du.0", n_feats, n_feats // reduction, k=1)
            _conv(sd, f"{p}.3.conv_du.2", n_feats // reduction, n_feats, k=1)
        _conv(sd, f"body.{g}.body.{blocks}", n_feats, n_feats)
    _conv(sd, f"body.{groups}", n_feats, n_feats)
    _upsampler(sd, "tail.0.", n_feats, scale)
    _conv(sd, "tail.1", n_feats, 3)
    return sd


def basicsr_rcan_state(n_feats: int, groups: int, blocks: int, reduction: int, scale: int) -> dict:
    """BasicSR ``archs/rcan_arch.py``: body.<g>.residual_group.<b>.rcab.{0,2,3.attention.{1,3}}, body.<g>.conv."""
    sd: dict = {}
    _conv(sd, "conv_first", 3, n_feats)
    for g in range(groups):
        for b in range(blocks):
            p = f"body.{g}.residual_group.{b}.rcab"
            _conv(sd, f"{p}.0", n_feats, n_feats)
            _conv(sd, f"{p}.2", n_feats, n_feats)
            _conv(sd, f"{p}.3.attention.1", n_feats, n_feats // reduction, k=1)
            _conv(sd, f"{p}.3.attention.3", n_feats // reduction, n_feats, k=1)
        _conv(sd, f"body.{g}.conv", n_feats, n_feats)
    _conv(sd, "conv_after_body", n_feats, n_feats)
    _upsampler(sd, "upsample.", n_feats, scale)
    _conv(sd, "conv_last", n_feats, 3)
    return sd


# --- the official computations, written against the official names ---------------------------------------------


def _c(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    w = sd[f"{name}.weight"]
    return F.conv2d(x, w, sd[f"{name}.bias"], padding=w.shape[-1] // 2)


def _tail(sd: dict, x: torch.Tensor, up: str, last: str, scale: int) -> torch.Tensor:
    j = 0
    while f"{up}{j}.weight" in sd:
        x = F.pixel_shuffle(_c(sd, f"{up}{j}", x), 3 if scale == 3 else 2)
        j += 2
    return _c(sd, last, x)


def official_edsr(sd: dict, x01: torch.Tensor, scale: int, res_scale: float) -> torch.Tensor:
    """EDSR-PyTorch forward on a [0, 255] image (rgb_range 255), returned in [0, 1]."""
    x = _c(sd, "head.0", _c(sd, "sub_mean", x01 * 255))
    res, i = x, 0
    while f"body.{i}.body.0.weight" in sd:
        res = res + _c(sd, f"body.{i}.body.2", F.relu(_c(sd, f"body.{i}.body.0", res))) * res_scale
        i += 1
    res = _c(sd, f"body.{i}", res) + x
    return _c(sd, "add_mean", _tail(sd, res, "tail.0.", "tail.1", scale)) / 255


def official_rcan(sd: dict, x01: torch.Tensor, scale: int) -> torch.Tensor:
    x = _c(sd, "head.0", _c(sd, "sub_mean", x01 * 255))
    res, g = x, 0
    while f"body.{g}.body.0.body.0.weight" in sd:
        group_in, b = res, 0
        while f"body.{g}.body.{b}.body.0.weight" in sd:
            p = f"body.{g}.body.{b}.body"
            r = _c(sd, f"{p}.2", F.relu(_c(sd, f"{p}.0", res)))
            gate = torch.sigmoid(_c(sd, f"{p}.3.conv_du.2", F.relu(_c(sd, f"{p}.3.conv_du.0", r.mean((2, 3), True)))))
            res = res + r * gate
            b += 1
        res = _c(sd, f"body.{g}.body.{b}", res) + group_in
        g += 1
    res = _c(sd, f"body.{g}", res) + x
    return _c(sd, "add_mean", _tail(sd, res, "tail.0.", "tail.1", scale)) / 255


def basicsr_edsr(sd: dict, x01: torch.Tensor, scale: int, res_scale: float) -> torch.Tensor:
    """BasicSR EDSR: (x - DIV2K mean) * 255 in, / 255 + mean out."""
    mean = torch.tensor((0.4488, 0.4371, 0.4040)).view(1, 3, 1, 1)
    x = _c(sd, "conv_first", (x01 - mean) * 255)
    res, i = x, 0
    while f"body.{i}.conv1.weight" in sd:
        res = res + _c(sd, f"body.{i}.conv2", F.relu(_c(sd, f"body.{i}.conv1", res))) * res_scale
        i += 1
    res = _c(sd, "conv_after_body", res) + x
    return _tail(sd, res, "upsample.", "conv_last", scale) / 255 + mean


def _check_output(model: torch.nn.Module, reference: torch.Tensor, x: torch.Tensor) -> None:
    with torch.no_grad():
        out = model(x)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


# --- tests ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("zip_format", [True, False])
def test_edsr_pytorch_pt(tmp_path, scale, zip_format):
    torch.manual_seed(scale)
    sd = edsr_pytorch_state(n_feats=16, n_resblocks=3, scale=scale)
    src = tmp_path / f"edsr_baseline_x{scale}.pt"
    torch.save(sd, src, _use_new_zipfile_serialization=zip_format)  # EDSR-PyTorch ships bare state dicts
    _model, info = convert(src, tmp_path / "out.safetensors")
    assert info["layout"] == "edsr" and info["arch"] == "edsr" and info["scales"] == [scale]
    assert info["kwargs"]["n_resblocks"] == 3 and info["kwargs"]["res_scale"] == 1.0
    assert info["kwargs"]["rgb_mean"] == pytest.approx(MEAN)
    model, meta = load_model(tmp_path / "out.safetensors", scale=scale)
    assert meta["source_format"] == "edsr" and meta["converted_from"] == src.name
    x = torch.rand(1, 3, 7, 6)
    with torch.no_grad():
        _check_output(model, official_edsr(sd, x, scale, res_scale=1.0), x)


def test_edsr_256_features_assume_res_scale_and_accept_overrides(tmp_path):
    torch.manual_seed(0)
    sd = edsr_pytorch_state(n_feats=256, n_resblocks=1, scale=2)
    src = tmp_path / "edsr_x2.pt"
    torch.save(sd, src)
    model, info = convert(src)
    assert info["kwargs"]["res_scale"] == 0.1 and "res_scale=0.1 assumed" in info["notes"][0]
    x = torch.rand(1, 3, 5, 5)
    with torch.no_grad():
        _check_output(model, official_edsr(sd, x, 2, res_scale=0.1), x)
    model, info = convert(src, overrides=parse_overrides(["res_scale=1"]))
    assert info["kwargs"]["res_scale"] == 1 and not info["notes"]
    with torch.no_grad():
        _check_output(model, official_edsr(sd, x, 2, res_scale=1.0), x)


@pytest.mark.parametrize("scale", [2, 4])
def test_basicsr_edsr_params_ema_with_module_prefix(tmp_path, scale):
    torch.manual_seed(1)
    ema = basicsr_edsr_state(16, 2, scale)
    plain = {k: torch.zeros_like(v) for k, v in ema.items()}
    src = tmp_path / "EDSR_Mx2_f64b16_DIV2K_official.pth"
    torch.save({"params": {f"module.{k}": v for k, v in plain.items()},
                "params_ema": {f"module.{k}": v for k, v in ema.items()}}, src)
    model, info = convert(src)  # params_ema is preferred
    assert info["layout"] == "basicsr-edsr" and info["kwargs"]["scale"] == scale
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        _check_output(model, basicsr_edsr(ema, x, scale, 1.0), x)
    model, _ = convert(src, key="params")
    assert all(float(p.detach().abs().sum()) == 0 for p in model.parameters())


@pytest.mark.parametrize("scale", [2, 3])
def test_rcan_official(tmp_path, scale):
    torch.manual_seed(2)
    sd = rcan_official_state(n_feats=16, groups=2, blocks=2, reduction=4, scale=scale)
    src = tmp_path / f"RCAN_BIX{scale}.pt"
    torch.save(sd, src, _use_new_zipfile_serialization=False)
    model, info = convert(src, tmp_path / "rcan.safetensors", fmt="rcan")
    assert info["layout"] == "rcan"
    assert {k: info["kwargs"][k] for k in ("n_feats", "n_resgroups", "n_resblocks", "reduction", "scale")} == {
        "n_feats": 16, "n_resgroups": 2, "n_resblocks": 2, "reduction": 4, "scale": scale}
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        reference = official_rcan(sd, x, scale)
    _check_output(model, reference, x)
    _check_output(load_model(tmp_path / "rcan.safetensors")[0], reference, x)


def test_basicsr_rcan_matches_the_official_computation(tmp_path):
    torch.manual_seed(3)
    official = rcan_official_state(16, 2, 3, 4, 4)
    basic = basicsr_rcan_state(16, 2, 3, 4, 4)
    # same weights under BasicSR names (BasicSR uses the DIV2K mean and no mean-shift layers)
    names = [k for k in official if not k.startswith(("sub_mean", "add_mean"))]
    assert len(names) == len(basic)
    for off, bas in zip(names, basic):
        assert official[off].shape == basic[bas].shape
        basic[bas] = official[off]
    official["sub_mean.bias"] = -255 * torch.tensor((0.4488, 0.4371, 0.4040))
    official["add_mean.bias"] = -official["sub_mean.bias"]
    src = tmp_path / "RCAN_BIX4.pth"
    torch.save({"params": basic}, src)
    model, info = convert(src, fmt="basicsr")
    assert info["layout"] == "basicsr-rcan" and info["kwargs"]["n_resblocks"] == 3
    x = torch.rand(1, 3, 5, 4)
    with torch.no_grad():
        _check_output(model, official_rcan(official, x, 4), x)


def swinir_official_state(
    embed_dim: int, depths: list[int], heads: list[int], window: int, mlp_ratio: float, scale: int,
    upsampler: str, resi: str, img_size: int,
) -> dict:
    """SwinIR ``models/network_swinir.py`` (classical / lightweight), including its derived buffers."""
    sd: dict = {}
    n = window * window

    def lin(name: str, cin: int, cout: int) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.randn(cout, cin) * 0.1, torch.randn(cout) * 0.1

    def norm(name: str) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = 1 + 0.1 * torch.randn(embed_dim), 0.1 * torch.randn(embed_dim)

    _conv(sd, "conv_first", 3, embed_dim)
    norm("patch_embed.norm")
    for i, (depth, h) in enumerate(zip(depths, heads)):
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}"
            norm(f"{p}.norm1")
            sd[f"{p}.attn.relative_position_bias_table"] = torch.randn((2 * window - 1) ** 2, h) * 0.1
            sd[f"{p}.attn.relative_position_index"] = torch.randint(0, (2 * window - 1) ** 2, (n, n))
            lin(f"{p}.attn.qkv", embed_dim, 3 * embed_dim)
            lin(f"{p}.attn.proj", embed_dim, embed_dim)
            norm(f"{p}.norm2")
            lin(f"{p}.mlp.fc1", embed_dim, int(embed_dim * mlp_ratio))
            lin(f"{p}.mlp.fc2", int(embed_dim * mlp_ratio), embed_dim)
            if j % 2:
                sd[f"{p}.attn_mask"] = torch.zeros((img_size // window) ** 2, n, n)
        if resi == "1conv":
            _conv(sd, f"layers.{i}.conv", embed_dim, embed_dim)
        else:
            _conv(sd, f"layers.{i}.conv.0", embed_dim, embed_dim // 4)
            _conv(sd, f"layers.{i}.conv.2", embed_dim // 4, embed_dim // 4, k=1)
            _conv(sd, f"layers.{i}.conv.4", embed_dim // 4, embed_dim)
    norm("norm")
    _conv(sd, "conv_after_body", embed_dim, embed_dim)
    if upsampler == "pixelshuffle":
        _conv(sd, "conv_before_upsample.0", embed_dim, 64)
        _upsampler(sd, "upsample.", 64, scale)
        _conv(sd, "conv_last", 64, 3)
    else:
        _conv(sd, "upsample.0", embed_dim, 3 * scale * scale)
    return sd


def _swinir_srkd_name(key: str) -> str:
    for old, new in (("conv_first.", "head."), ("conv_before_upsample.", "tail.conv_before_upsample."),
                     ("upsample.", "tail.upsample."), ("conv_last.", "tail.conv_last.")):
        if key.startswith(old):
            return new + key[len(old):]
    return "body." + key[len("layers."):] if key.startswith("layers.") else key


@pytest.mark.parametrize(
    "upsampler,resi,scale", [("pixelshuffle", "1conv", 2), ("pixelshuffle", "3conv", 3), ("pixelshuffledirect", "1conv", 4)]
)
def test_swinir_official_params(tmp_path, upsampler, resi, scale):
    torch.manual_seed(4)
    sd = swinir_official_state(24, [2, 4], [2, 3], 4, 1.5, scale, upsampler, resi, img_size=16)
    src = tmp_path / f"001_classicalSR_DF2K_s64w8_SwinIR-M_x{scale}.pth"
    torch.save({"params": sd}, src)
    model, info = convert(src, tmp_path / "s.safetensors")
    assert info["layout"] == "swinir"
    assert {k: info["kwargs"][k] for k in ("embed_dim", "depths", "num_heads", "window_size", "mlp_ratio", "scale",
                                           "upsampler", "resi_connection", "img_size")} == {
        "embed_dim": 24, "depths": [2, 4], "num_heads": [2, 3], "window_size": 4, "mlp_ratio": 1.5, "scale": scale,
        "upsampler": upsampler, "resi_connection": resi, "img_size": 16}
    ours = model.state_dict()
    learned = {k: v for k, v in sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    assert len(learned) == len(ours)
    for key, value in learned.items():
        assert torch.equal(ours[_swinir_srkd_name(key)], value), key
    loaded, _ = load_model(tmp_path / "s.safetensors")
    x = torch.rand(1, 3, 9, 10)  # not a multiple of the window: padded inside
    with torch.no_grad():
        assert loaded(x).shape == (1, 3, 9 * scale, 10 * scale)


# --- refusals ---------------------------------------------------------------------------------------------------


def test_wrong_format_arch_or_scale_are_one_line_errors(tmp_path):
    src = tmp_path / "edsr_x2.pt"
    torch.save(edsr_pytorch_state(8, 1, 2), src)
    with pytest.raises(CheckpointError, match=r"edsr_x2.pt: does not look like a checkpoint in the swinir layout \(first keys"):
        convert(src, fmt="swinir")
    with pytest.raises(CheckpointError, match="does not look like any supported official layout of rcan"):
        convert(src, arch="rcan")
    with pytest.raises(CheckpointError, match="its upsampler is x2, so it cannot be converted as x4"):
        convert(src, scale=4)
    with pytest.raises(CheckpointError, match="unknown format 'caffe'"):
        convert(src, fmt="caffe")
    with pytest.raises(CheckpointError, match="not a MATLAB .mat file"):
        convert(src, fmt="matconvnet-vdsr")
    with pytest.raises(CheckpointError, match=r"edsr: .*unexpected keyword argument 'width'"):
        convert(src, overrides={"width": 3})


def test_damaged_official_weights_are_reported_not_half_loaded(tmp_path):
    sd = edsr_pytorch_state(8, 2, 2)
    sd["body.1.body.2.weight"] = sd["body.1.body.2.weight"][:4]
    src = tmp_path / "edsr.pt"
    torch.save(sd, src)
    with pytest.raises(CheckpointError, match=r"edsr.pt: weights do not fit edsr\(.*\) \[edsr layout\]: 1 shape mismatch"):
        convert(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()
    sd = edsr_pytorch_state(8, 2, 2)
    sd["body.0.body.4.weight"] = torch.zeros(8, 8, 3, 3)
    torch.save(sd, src)
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\), e.g. body.0.body.4.weight"):
        convert(src)


def test_convert_cli(tmp_path, capsys):
    src = tmp_path / "edsr_baseline_x3.pt"
    torch.save(edsr_pytorch_state(8, 2, 3), src)
    out = tmp_path / "models"
    out.mkdir()
    assert main(["convert", str(src), str(out), "--set", "res_scale=1.0", "--fp16"]) == 0
    printed = capsys.readouterr().out
    assert "(edsr layout)" in printed and "x3" in printed and "wrote" in printed
    model, meta = load_model(out / "edsr_baseline_x3.safetensors")
    assert meta["dtype"] == "float16" and model.scale == 3
    assert main(["convert", str(src), str(tmp_path / "new") + "/", "--set", "res_scale=1.0"]) == 0
    assert (tmp_path / "new" / "edsr_baseline_x3.safetensors").is_file()
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--set", "res_scale"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == "error: --set 'res_scale': expected key=value"
    text = tmp_path / "readme.pth"
    text.write_text("not weights")
    for argv, message in [
        ([str(tmp_path / "missing.pth"), "o.safetensors"], "no such file"),
        ([str(text), str(tmp_path / "o.safetensors")], "not a PyTorch checkpoint"),
        ([str(tmp_path), str(tmp_path / "o.safetensors")], "is a folder"),
        ([str(src), str(tmp_path / "o.safetensors"), "--scale", "2"], "cannot be converted as x2"),
        ([str(src), str(src)], "would overwrite the input"),
    ]:
        assert main(["convert", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
