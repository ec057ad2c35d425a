"""srkd checkpoints: self-describing round trips, atomic writes, and one clear refusal per kind of bad file."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from srkd.checkpoint import load_model, read_metadata, save_model
from srkd.cli.main import main
from srkd.errors import CheckpointError
from srkd.models import build_model


def _small_edsr(scale: int = 2):
    return build_model("edsr", scale=scale, n_feats=8, n_resblocks=2)


def _vdsr():
    return build_model("vdsr", scale=2, n_feats=8, n_layers=4)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_rebuilds_the_model_from_metadata(tmp_path):
    model = _small_edsr(3)
    path = save_model(tmp_path / "m.safetensors", model, meta={"config": "edsr_x3.yaml", "psnr": 30.25})
    loaded, meta = load_model(path)
    assert type(loaded).__name__ == "EDSR" and loaded.scale == 3 and not loaded.training
    assert _same_weights(model, loaded)
    assert meta["arch"] == "edsr" and meta["kwargs"] == {"scale": 3, "n_feats": 8, "n_resblocks": 2}
    assert meta["scale"] == 3 and meta["scales"] == [3] and meta["colour"] == "rgb"
    assert meta["config"] == "edsr_x3.yaml" and meta["psnr"] == 30.25  # user metadata keep their JSON types
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert read_metadata(path)["psnr"] == 30.25


def test_metadata_are_plain_strings_readable_by_any_safetensors_tool(tmp_path):
    from safetensors import safe_open

    path = save_model(tmp_path / "v.safetensors", _vdsr(), scales=[2, 3, 4])
    with safe_open(str(path), framework="pt") as fh:
        raw = fh.metadata()
    assert raw["format"] == "srkd-model" and raw["arch"] == "vdsr" and raw["colour"] == "y"
    assert json.loads(raw["scales"]) == [2, 3, 4] and json.loads(raw["kwargs"])["n_layers"] == 4
    assert raw["format_version"] == "1" and raw["srkd_version"]


def test_multi_scale_vdsr_serves_every_listed_scale(tmp_path):
    path = save_model(tmp_path / "v.safetensors", _vdsr(), scales=[2, 3, 4])
    for s in (2, 3, 4):
        model, meta = load_model(path, scale=s)
        assert model.scale == s and meta["scale"] == s and model.spec.kwargs["scale"] == s
    with pytest.raises(CheckpointError, match=r"x2/x3/x4 vdsr model cannot be used for x8"):
        load_model(path, scale=8)


def test_fp16_storage_is_restored_to_fp32(tmp_path):
    model = _small_edsr()
    path = save_model(tmp_path / "h.safetensors", model, dtype=torch.float16)
    full = save_model(tmp_path / "f.safetensors", model)
    assert path.stat().st_size < 0.6 * full.stat().st_size
    loaded, meta = load_model(path)
    assert meta["dtype"] == "float16"
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32
        torch.testing.assert_close(v, model.state_dict()[k], rtol=1e-3, atol=1e-4)


def test_reserved_metadata_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path / "m.safetensors", _vdsr(), meta={"arch": "edsr"})


def test_failed_write_keeps_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = save_model(tmp_path / "m.safetensors", _vdsr())
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(CheckpointError, match="cannot write checkpoint .*No space left"):
        save_model(path, _small_edsr())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_read_only_folder_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CheckpointError, match="cannot write checkpoint"):
            save_model(folder / "m.safetensors", _vdsr())
    finally:
        folder.chmod(0o700)


# --- refusals ---------------------------------------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_model(tmp_path)


def test_not_a_safetensors_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint at all, just some text\n" * 3)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(empty)


def test_truncated_safetensors_file(tmp_path):
    path = save_model(tmp_path / "m.safetensors", _small_edsr())
    data = path.read_bytes()
    for cut in (4, 40, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"{bad.name}: not a safetensors file, or truncated"):
            load_model(bad)


def test_pickles_are_pointed_to_convert(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"PyTorch pickle: convert it with `srkd convert"):
        load_model(path)


def test_safetensors_without_srkd_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(_vdsr().state_dict(), str(path))
    with pytest.raises(CheckpointError, match=r"not an srkd model checkpoint .*`srkd convert SRC DST`"):
        load_model(path)


def test_model_for_another_scale(tmp_path):
    path = save_model(tmp_path / "x4.safetensors", _small_edsr(4))
    with pytest.raises(CheckpointError, match=r"x4.safetensors: a x4 edsr model cannot be used for x2"):
        load_model(path, scale=2)
    assert load_model(path, scale=4)[0].scale == 4


def test_wrong_colour_mode(tmp_path):
    path = save_model(tmp_path / "v.safetensors", _vdsr())
    with pytest.raises(CheckpointError, match="for Y images, but RGB was requested"):
        load_model(path, colour="rgb")


def test_model_of_another_architecture(tmp_path):
    path = save_model(tmp_path / "v.safetensors", _vdsr())
    with pytest.raises(CheckpointError, match="v.safetensors: a vdsr model, but edsr was expected"):
        load_model(path, arch="edsr")
    assert type(load_model(path, arch="VDSR")[0]).__name__ == "VDSR"


def _rewrite_metadata(path, **changes):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in changes.items()})
    save_file(load_file(str(path)), str(path), metadata=meta)


def test_architecture_and_weights_mismatch(tmp_path):
    path = save_model(tmp_path / "m.safetensors", _small_edsr())
    _rewrite_metadata(path, kwargs={"scale": 2, "n_feats": 16, "n_resblocks": 2})
    with pytest.raises(CheckpointError, match=r"m.safetensors: weights do not fit edsr\(.*n_feats=16.*shape mismatch"):
        load_model(path)
    _rewrite_metadata(path, kwargs={"scale": 2, "n_feats": 8, "n_resblocks": 3})
    with pytest.raises(CheckpointError, match=r"missing key\(s\), e.g. body.2"):
        load_model(path)
    _rewrite_metadata(path, arch="rcan", kwargs={"scale": 2, "n_feats": 8, "reduction": 4})
    # a default RCAN (10 groups of 20 blocks) cannot even be in this file: refused before it is built
    with pytest.raises(CheckpointError, match="describe a rcan.* more weights than a .*-byte file can hold"):
        load_model(path)
    _rewrite_metadata(path, arch="rcan", kwargs={"scale": 2, "n_feats": 8, "reduction": 4, "n_resgroups": 1,
                                                 "n_resblocks": 1})
    with pytest.raises(CheckpointError, match="weights do not fit rcan"):
        load_model(path)


def test_unknown_architecture_and_bad_kwargs_in_metadata(tmp_path):
    path = save_model(tmp_path / "m.safetensors", _vdsr())
    _rewrite_metadata(path, arch="resnet50")
    with pytest.raises(CheckpointError, match="cannot rebuild the model: unknown architecture 'resnet50'"):
        load_model(path)
    _rewrite_metadata(path, arch="vdsr", kwargs={"scale": 2, "depth": 3})
    with pytest.raises(CheckpointError, match="cannot rebuild the model: vdsr: .*depth"):
        load_model(path)


def test_newer_format_version_and_corrupt_metadata(tmp_path):
    path = save_model(tmp_path / "m.safetensors", _vdsr())
    _rewrite_metadata(path, format_version="7")
    with pytest.raises(CheckpointError, match="format version 7 is not supported"):
        read_metadata(path)
    _rewrite_metadata(path, format_version="1", kwargs="{not json")
    with pytest.raises(CheckpointError, match="corrupt srkd metadata"):
        load_model(path)


# --- CLI: one error line, exit 2 --------------------------------------------------------------------------------


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_info_cli_bad_inputs(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in _one_error_line(capsys)
    assert main(["info", "resnet:depth=50"]) == 2
    assert "neither a checkpoint file nor an architecture" in _one_error_line(capsys)
    assert main(["info", "edsr:n_feats"]) == 2
    assert "expected key=value" in _one_error_line(capsys)
    assert main(["info", "edsr:width=3"]) == 2
    assert "width" in _one_error_line(capsys)
    assert main(["info", "edsr:scale=2", "--input", "3x0x7", "--no-latency"]) == 2
    assert "expected CxHxW" in _one_error_line(capsys)
    assert main(["info", "vdsr", "--input", "3x32x32", "--no-latency"]) == 2
    assert "1-channel input" in _one_error_line(capsys)
    assert main(["info", "vdsr", "--device", "tpu9"]) == 2
    assert "unknown device" in _one_error_line(capsys)
    if not torch.cuda.is_available():
        assert main(["info", "vdsr", "--device", "cuda"]) == 2
        assert "CUDA is not available" in _one_error_line(capsys)
    path = save_model(tmp_path / "x4.safetensors", _small_edsr(4))
    assert main(["info", str(path), "--scale", "2"]) == 2
    assert "cannot be used for x2" in _one_error_line(capsys)


def test_info_cli_numbers(tmp_path, capsys):
    out_json = tmp_path / "info.json"
    spec = "edsr:n_feats=8,n_resblocks=2,scale=2"
    assert main(["info", spec, "--input", "3x16x16", "--iters", "2", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    model = build_model("edsr", n_feats=8, n_resblocks=2, scale=2)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    # MACs by hand: convs at 16x16 (head 3->8, 4 body 8->8, after-body 8->8, upsample 8->32), conv_last at 32x32
    macs = 16 * 16 * 9 * (3 * 8 + 5 * 8 * 8 + 8 * 32) + 32 * 32 * 9 * 8 * 3
    assert report["flops"] == macs
    assert report["latency_s"] > 0 and report["latency_runs"] == 2 and report["input"] == [3, 16, 16]
    assert f"{report['params']:,}" in printed and "latency" in printed
    # a checkpoint and a list-valued spec work too
    path = save_model(tmp_path / "v.safetensors", _vdsr(), scales=[2, 3, 4])
    assert main(["info", str(path), "--scale", "3", "--no-latency", "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["scale"] == 3 and report["input"] == [1, 256, 256] and "latency_s" not in report
    assert report["flops"] == 768 * 768 * 9 * (1 * 8 + 2 * 8 * 8 + 8 * 1)
    spec = "swinir:embed_dim=12,depths=[2,2],num_heads=[2,2],window_size=4,scale=2"
    assert main(["info", spec, "--input", "3x8x8", "--no-latency"]) == 0
    assert "depths=[2, 2]" in capsys.readouterr().out
