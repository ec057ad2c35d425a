"""``srkd convert --to basicsr|official``: students leave srkd in the layouts other tools load.

Round trips (srkd -> other layout -> ``srkd convert`` back) must give identical tensors for every architecture
with a published layout, and a student written ``--to basicsr`` must load with ``strict=True`` into BasicSR's
own EDSR / RCAN / SwinIR classes (read from the 1.4.2 sdist) and compute the same output within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reference import basicsr_archs

from srkd.checkpoint.convert import convert
from srkd.checkpoint.export_layout import export_checkpoint, invert_rule, target_layout, to_layout
from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.errors import CheckpointError
from srkd.models import all_layouts, build_model

# Small instances of every architecture that has a published layout
SMALL = {
    "edsr": dict(scale=2, n_feats=16, n_resblocks=3, res_scale=0.1),
    "rcan": dict(scale=3, n_feats=16, n_resgroups=2, n_resblocks=2, reduction=4),
    "swinir": dict(scale=2, embed_dim=12, depths=(2, 3), num_heads=(2, 3), window_size=4, img_size=16),
    "vdsr": dict(n_layers=5, n_feats=8),
    "bsrn": dict(scale=2, num_feat=16, num_block=2),
    "smfanet": dict(scale=2, dim=12, n_blocks=2),
    "imdn": dict(scale=2, num_feat=16, num_block=2),
    "rfdn": dict(scale=4, num_feat=16, num_block=2),
    "carn_m": dict(scale=2, num_feat=16),
    "pan": dict(scale=2, num_feat=16, num_up_feat=8, num_block=2),
}
# What each architecture can be written as (vdsr has no BasicSR layout)
TARGETS = [(arch, t) for arch in SMALL for t in ("basicsr", "official") if (arch, t) != ("vdsr", "basicsr")]


def _student(arch: str, seed: int = 0) -> torch.nn.Module:
    """A small model with every tensor moved off its initialisation, so a swapped key cannot go unnoticed."""
    torch.manual_seed(seed)
    model = build_model(arch, **SMALL[arch])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


@pytest.mark.parametrize(("arch", "target"), TARGETS)
def test_round_trip_gives_identical_tensors(arch: str, target: str, tmp_path: Path) -> None:
    model = _student(arch)
    src = save_model(tmp_path / "student.safetensors", model)
    info = export_checkpoint(src, tmp_path / "out.pth", target)
    raw = torch.load(tmp_path / "out.pth", map_location="cpu", weights_only=True)
    assert ("params" in raw) == (target == "basicsr") and info["wrapper"] == ("params" if target == "basicsr" else None)
    back, back_info = convert(tmp_path / "out.pth", scale=SMALL[arch].get("scale"))
    assert back_info["arch"] == arch
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_published_names_are_kept_and_dropped_constants_come_back() -> None:
    """Architectures that keep their published names are the identity, plus what srkd does not store."""
    for arch in ("bsrn", "smfanet", "imdn", "rfdn", "pan"):
        model = _student(arch)
        state = to_layout(model, target_layout(arch, "official"))
        assert state.keys() == model.state_dict().keys()
    carn = _student("carn_m")
    state = to_layout(carn, target_layout("carn_m", "official"))
    extra = sorted(set(state) - set(carn.state_dict()))
    assert extra == [f"{n}_mean.shifter.{p}" for n in ("add", "sub") for p in ("bias", "weight")]
    assert torch.allclose(state["sub_mean.shifter.bias"], -torch.tensor([0.4488, 0.4371, 0.4040]))


def test_official_edsr_gets_its_mean_shift_convs_and_index_after_the_blocks() -> None:
    model = _student("edsr")
    state = to_layout(model, target_layout("edsr", "official"))
    assert "body.3.weight" in state and "body.2.body.2.weight" in state  # the conv after 3 blocks is body.3
    assert torch.equal(state["sub_mean.weight"], torch.eye(3).view(3, 3, 1, 1))
    assert torch.allclose(state["add_mean.bias"], 255 * torch.tensor([0.4488, 0.4371, 0.4040]))
    rcan = to_layout(_student("rcan"), target_layout("rcan", "official"))
    assert "body.0.body.2.weight" in rcan and "body.2.weight" in rcan  # group's closing conv, body's closing conv


def test_every_layout_rule_inverts() -> None:
    """A rule added to a LAYOUTS table with regex syntax the inverter does not read fails here, not for a user."""
    for layout in all_layouts():
        for pattern, repl in layout.rules:
            if repl is not None:
                invert_rule(pattern, repl)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no basicsr layout"):
        target_layout("vdsr", "basicsr")
    with pytest.raises(CheckpointError, match="srkd-only"):
        target_layout("generator", "official")
    edsr1 = build_model("edsr", scale=2, n_feats=8, n_resblocks=1, img_range=1.0)
    with pytest.raises(CheckpointError, match=r"img_range 1"):
        to_layout(edsr1, target_layout("edsr", "official"))
    to_layout(edsr1, target_layout("edsr", "basicsr"))  # BasicSR's EDSR takes img_range as an argument
    swin = build_model("swinir", scale=2, embed_dim=12, depths=(2,), num_heads=(2,), window_size=8, img_size=8)
    with pytest.raises(CheckpointError, match="img_size 8"):
        to_layout(swin, target_layout("swinir", "basicsr"))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_model(tmp_path / "s.safetensors", _student("edsr"))
    assert main(["convert", "--to", "basicsr", str(src), str(tmp_path / "s.pth")]) == 0
    out = capsys.readouterr().out
    assert "basicsr-edsr layout" in out and "{'params': state_dict}" in out
    assert main(["convert", "--to", "official", "--arch", "edsr", str(src), str(tmp_path / "o.pth")]) == 2
    assert "with --to, SRC is an srkd checkpoint" in capsys.readouterr().err
    assert main(["convert", "--to", "official", str(src), str(src)]) == 2  # never overwrite the input
    assert main(["convert", "--to", "basicsr", str(tmp_path / "s.pth"), str(tmp_path / "x.pth")]) != 0


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # raised inside BasicSR's SwinIR
@pytest.mark.parametrize("arch", ["edsr", "rcan", "swinir"])
def test_basicsr_classes_load_the_student_strictly_and_agree(arch: str, tmp_path: Path) -> None:
    ref = basicsr_archs()
    model = _student(arch, seed=3)
    k = SMALL[arch]
    if arch == "edsr":
        theirs = ref.EDSR(3, 3, num_feat=k["n_feats"], num_block=k["n_resblocks"], upscale=k["scale"],
                          res_scale=k["res_scale"])
    elif arch == "rcan":
        theirs = ref.RCAN(3, 3, num_feat=k["n_feats"], num_group=k["n_resgroups"], num_block=k["n_resblocks"],
                          squeeze_factor=k["reduction"], upscale=k["scale"])
    else:
        theirs = ref.SwinIR(upscale=k["scale"], img_size=k["img_size"], window_size=k["window_size"],
                            depths=list(k["depths"]), embed_dim=k["embed_dim"], num_heads=list(k["num_heads"]),
                            mlp_ratio=2, upsampler="pixelshuffle")
    src = save_model(tmp_path / "student.safetensors", model)
    export_checkpoint(src, tmp_path / "student.pth", "basicsr")
    params = torch.load(tmp_path / "student.pth", map_location="cpu", weights_only=True)["params"]
    theirs.load_state_dict(params, strict=True)
    theirs.eval()
    sizes = [(16, 16), (8, 12)] if arch == "swinir" else [(9, 7)]  # BasicSR's SwinIR does not pad
    for h, w in sizes:
        x = torch.rand(2, 3, h, w)
        with torch.no_grad():
            torch.testing.assert_close(theirs(x), model(x), atol=1e-5, rtol=0)
