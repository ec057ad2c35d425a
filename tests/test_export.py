"""``srkd export``: ONNX (onnxruntime) and TorchScript files that match PyTorch at several sizes, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from srkd.checkpoint.io import save_model
from srkd.cli.main import main
from srkd.errors import SrkdError
from srkd.export import FP16_TOLERANCE, check_export, export_onnx, real_input
from srkd.models import build_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

TINY = {
    "edsr": dict(scale=4, n_feats=8, n_resblocks=1),
    "rcan": dict(scale=2, n_feats=8, n_resgroups=1, n_resblocks=1, reduction=4),
    "vdsr": dict(n_feats=8, n_layers=3),
    "swinir": dict(scale=2, embed_dim=12, depths=[1, 1], num_heads=[2, 2], window_size=8, img_size=16),
}


def checkpoint(tmp_path: Path, arch: str) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(arch, **TINY[arch]).eval()
    return save_model(tmp_path / f"{arch}.safetensors", model), model


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("arch", ["edsr", "rcan", "vdsr", "swinir"])
def test_dynamic_onnx_matches_pytorch_at_two_sizes_on_random_and_real_images(tmp_path, arch, capsys):
    ckpt, model = checkpoint(tmp_path, arch)
    out = tmp_path / f"{arch}.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--dynamic", "--input", "24x32"]) == 0
    c = model.in_channels
    shapes = f"1x{c}x24x32, 2x{c}x37x39"  # the example size, then an odd one with batch 2; each listed once
    assert f"matches PyTorch on random and real images of {shapes} (max |diff|" in capsys.readouterr().out
    gen = torch.Generator().manual_seed(5)
    for x in (torch.rand(1, c, 24, 32, generator=gen), torch.rand(2, c, 41, 19, generator=gen),
              real_input(model, (57, 66))):
        with torch.no_grad():
            expected = model(x).numpy()
        got = run_onnx(out, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-4
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    if arch in ("edsr", "rcan", "swinir"):
        assert "DepthToSpace" in ops  # PixelShuffle exported as one op, not a shape-baked reshape chain


def test_static_onnx_has_fixed_input_shape_and_opset(tmp_path):
    ckpt, _ = checkpoint(tmp_path, "edsr")
    out = tmp_path / "static.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--input", "20x28", "--opset", "13"]) == 0
    graph = onnx.load(str(out))
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 20, 28]
    assert graph.opset_import[0].version == 13
    out_dims = [d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [1, 3, 80, 112]


def test_torchscript_runs_any_size(tmp_path):
    ckpt, model = checkpoint(tmp_path, "rcan")
    out = tmp_path / "rcan.pt"
    assert main(["export", str(ckpt), "--torchscript", str(out)]) == 0
    loaded = torch.jit.load(str(out))
    for shape in ((1, 3, 16, 16), (3, 3, 23, 9)):
        x = torch.rand(shape)
        with torch.no_grad():
            assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_check_export_catches_a_file_that_does_not_match(tmp_path):
    _, model = checkpoint(tmp_path, "edsr")
    out = export_onnx(model, tmp_path / "m.onnx", dynamic=True)
    with torch.no_grad():
        model.tail.conv_last.bias += 1.0  # the file no longer matches the module (1/255 at the output)
    with pytest.raises(SrkdError, match="differs from PyTorch"):
        check_export(model, out, "onnx", [torch.rand(1, 3, 16, 16)])


@pytest.mark.parametrize("content", [None, b"not a safetensors file at all"])
def test_bad_checkpoint_is_one_error_line(tmp_path, capsys, content):
    bad = tmp_path / "bad.safetensors"
    if content is not None:
        bad.write_bytes(content)
    out = tmp_path / "x.onnx"
    assert main(["export", str(bad), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.safetensors" in lines[0]
    assert not out.exists()


def test_usage_errors(tmp_path, capsys):
    ckpt, _ = checkpoint(tmp_path, "edsr")
    assert main(["export", str(ckpt)]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "a.onnx"), "--input", "12"]) == 2
    assert "HxW" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "a.onnx"), "--opset", "3"]) == 2
    assert "opset" in capsys.readouterr().err


@pytest.mark.slow
def test_dynamo_exporter_option(tmp_path):
    pytest.importorskip("onnxscript")
    _, model = checkpoint(tmp_path, "edsr")
    out = export_onnx(model, tmp_path / "dynamo.onnx", dynamic=True, dynamo=True, size=(24, 32))
    rows = check_export(model, out, "onnx", [torch.rand(1, 3, 24, 32), torch.rand(2, 3, 41, 19)])
    assert [r["shape"] for r in rows] == [[1, 3, 24, 32], [2, 3, 41, 19]]
    assert max(r["max_abs_diff"] for r in rows) < 1e-4


@pytest.mark.slow
def test_bundled_trained_teacher_exports_within_tolerance_on_real_photos(tmp_path):
    from srkd.export import load_for_export

    bundled = Path(__file__).resolve().parents[1] / "src" / "srkd" / "assets" / "teachers" / "edsr64-16-x2.safetensors"
    if not bundled.is_file():
        pytest.skip(f"{bundled} not present")
    model, _ = load_for_export(bundled)
    out = export_onnx(model, tmp_path / "teacher.onnx", dynamic=True, size=(48, 40))
    rows = check_export(model, out, "onnx", [real_input(model, (48, 40)), real_input(model, (95, 121), batch=2)])
    assert max(r["max_abs_diff"] for r in rows) < 1e-4


@pytest.mark.parametrize("arch", ["edsr", "vdsr"])
def test_onnx_metadata_says_how_to_feed_the_graph(tmp_path, arch):
    ckpt, model = checkpoint(tmp_path, arch)
    out = tmp_path / f"{arch}.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--input", "16x16"]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    from srkd import __version__

    assert props["srkd_version"] == __version__ and props["arch"] == arch
    assert json.loads(props["kwargs"]) == json.loads(json.dumps(TINY[arch]))
    assert props["scale"] == str(model.scale) and props["colour"] == model.colour
    assert props["channels"] == str(model.in_channels) and props["value_range"] == "[0, 1]"
    assert props["img_range"] == ("255" if arch == "edsr" else "1")  # EDSR scales by 255 inside; VDSR has none
    assert props["upsample_input"] == ("true" if arch == "vdsr" else "false")
    assert props["dtype"] == "float32" and props["layout"] == "NCHW"


def test_fp16_onnx_is_half_precision_and_within_one_level_of_fp32(tmp_path, capsys):
    ckpt, model = checkpoint(tmp_path, "edsr")
    out = tmp_path / "half.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--dynamic", "--fp16", "--input", "16x20"]) == 0
    assert "(onnx, float16, edsr x4" in capsys.readouterr().out
    proto = onnx.load(str(out))
    half = onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == half
    assert proto.graph.output[0].type.tensor_type.elem_type == half
    floats = [t for t in proto.graph.initializer if t.data_type in (half, onnx.TensorProto.FLOAT)]
    assert floats and all(t.data_type == half for t in floats)
    assert {p.key: p.value for p in proto.metadata_props}["dtype"] == "float16"
    x = real_input(model, (21, 17))
    got = run_onnx(out, x.half())
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.dtype == np.float16 and np.abs(got.astype(np.float32) - expected).max() < FP16_TOLERANCE
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not converted
    assert main(["export", str(ckpt), "--torchscript", str(tmp_path / "a.pt"), "--fp16"]) == 2
