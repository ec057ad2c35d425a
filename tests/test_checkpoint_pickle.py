"""The restricted unpickler of ``srkd convert``: reads real torch files, refuses (and never runs) anything else."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from srkd.checkpoint.convert import InertObject, convert, module_state_dict, read_official, read_torch_pickle
from srkd.cli.main import main
from srkd.errors import CheckpointError

# --- malicious pickles ------------------------------------------------------------------------------------------


class _RunsShell:
    """Unpickling this with plain pickle would run a shell command (the classic pickle exploit)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


def _legacy_stream(payload: bytes, keys: bytes | None = None) -> bytes:
    """A torch<1.6 legacy file around an arbitrary object pickle."""
    head = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    head += pickle.dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {}}, protocol=2)
    return head + payload + (keys if keys is not None else pickle.dumps([], protocol=2))


@pytest.mark.parametrize("container", ["zip", "legacy", "raw"])
@pytest.mark.parametrize("attack", [_RunsShell, _Evals])
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, container, attack):
    marker = tmp_path / "pwned"
    obj = {"state_dict": {"w": torch.zeros(3)}, "x": attack(marker)}
    path = tmp_path / "evil.pth"
    if container == "zip":
        torch.save(obj, path)  # torch pickles the __reduce__ result as a global call
    elif container == "legacy":
        path.write_bytes(_legacy_stream(pickle.dumps({"x": attack(marker)}, protocol=2)))
    else:
        path.write_bytes(pickle.dumps(attack(marker), protocol=4))
    with pytest.raises(CheckpointError, match=r"evil.pth: refused to unpickle the global '(posix|os|builtins|__builtin__)\."):
        read_torch_pickle(path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        convert(path, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_refuses_a_malicious_pickle_with_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_epoch_50.pth"
    torch.save({"epoch": 1, "model": _RunsShell(marker)}, path)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "refused to unpickle the global" in err[0]
    assert not marker.exists()


@pytest.mark.parametrize(
    "global_name",
    [b"builtins\nexec", b"builtins\ngetattr", b"subprocess\nPopen", b"torch\nload", b"torch._utils\n_rebuild_qtensor",
     b"numpy.core.multiarray\n_reconstruct", b"torch.nn.modules.module\n_addindent"],
)
def test_globals_outside_the_allow_list_are_refused(tmp_path, global_name):
    # GLOBAL 'module name', EMPTY_TUPLE, REDUCE, STOP
    path = tmp_path / "g.pth"
    path.write_bytes(b"\x80\x02c" + global_name + b"\n)R.")
    with pytest.raises(CheckpointError, match="refused to unpickle the global"):
        read_torch_pickle(path)


def test_unknown_persistent_records_are_refused(tmp_path):
    payload = object()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return ("shell", "rm -rf /") if obj is payload else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"a": payload})
    path = tmp_path / "p.pth"
    path.write_bytes(_legacy_stream(buf.getvalue()))
    with pytest.raises(CheckpointError, match="refused to unpickle the persistent record 'shell'"):
        read_torch_pickle(path)


def test_tensor_pointing_outside_its_storage_is_refused(tmp_path):
    path = tmp_path / "t.pth"
    torch.save({"w": torch.arange(4.0)}, path)
    # enlarge the declared shape of the tensor inside data.pkl: (4,) -> (9,) with the same 16-byte storage
    with zipfile.ZipFile(path) as zin:
        items = {n: zin.read(n) for n in zin.namelist()}
    pkl = next(n for n in items if n.endswith("data.pkl"))
    assert b"K\x04\x85" in items[pkl]
    items[pkl] = items[pkl].replace(b"K\x04\x85", b"K\x09\x85", 1)
    with zipfile.ZipFile(path, "w") as zout:
        for name, data in items.items():
            zout.writestr(name, data)
    with pytest.raises(CheckpointError, match="outside its storage"):
        read_torch_pickle(path)


# --- what the unpickler must read -------------------------------------------------------------------------------


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False))


def _equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("zip_format", [True, False])
def test_reads_state_dicts_in_both_torch_containers(tmp_path, zip_format):
    ref = _net().state_dict()
    path = tmp_path / "sd.pth"
    torch.save({"params": ref, "epoch": 3, "half": torch.ones(2, dtype=torch.float16)}, path,
               _use_new_zipfile_serialization=zip_format)
    obj = read_torch_pickle(path)
    assert obj["epoch"] == 3 and obj["half"].dtype == torch.float16
    assert isinstance(obj["params"], OrderedDict) and _equal(obj["params"], ref)


@pytest.mark.parametrize("zip_format", [True, False])
def test_whole_pickled_modules_become_inert_state(tmp_path, zip_format):
    net = _net()
    path = tmp_path / "m.pth"
    torch.save({"epoch": 50, "model": net}, path, _use_new_zipfile_serialization=zip_format)
    obj = read_torch_pickle(path)
    assert isinstance(obj["model"], InertObject) and not isinstance(obj["model"], nn.Module)
    assert obj["model"].origin == "torch.nn.modules.container.Sequential"
    assert _equal(module_state_dict(obj["model"]), net.state_dict())


def test_views_and_shared_storages_keep_their_values(tmp_path):
    base = torch.arange(12.0)
    path = tmp_path / "v.pth"
    torch.save({"a": base[2:5], "b": base.view(3, 4).t(), "c": base}, path, _use_new_zipfile_serialization=False)
    obj = read_torch_pickle(path)
    assert torch.equal(obj["a"], base[2:5]) and torch.equal(obj["b"], base.view(3, 4).t())
    assert torch.equal(obj["c"], base)


def test_truncated_and_corrupt_pickles(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(_net().state_dict(), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    for cut in (1, 30, len(data) // 2, len(data) - 3):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"cut{cut}.pth: (corrupt|truncated)"):
            read_torch_pickle(bad)
    zipped = tmp_path / "z.pth"
    torch.save(_net().state_dict(), zipped)
    bad = tmp_path / "zcut.pth"
    bad.write_bytes(zipped.read_bytes()[: zipped.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="zcut.pth: "):
        read_official(bad)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_torch_pickle(text)


def test_storage_larger_than_the_file_is_refused_before_allocating(tmp_path):
    storage = object()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is storage:
                return ("storage", torch.FloatStorage, "0", "cpu", 10**12, None)
            return None

    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor, (storage, 0, (10,), (1,)))

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"w": Rebuild()})
    path = tmp_path / "big.pth"
    path.write_bytes(_legacy_stream(buf.getvalue(), pickle.dumps(["0"], protocol=2) + struct.pack("<q", 10)))
    with pytest.raises(CheckpointError, match="larger than the file"):
        read_torch_pickle(path)


def test_no_weights_found_lists_the_entries(tmp_path):
    path = tmp_path / "opt.pth"
    torch.save({"optimizer": {"lr": 0.1}, "iter": 5}, path)
    with pytest.raises(CheckpointError, match=r"no weights found in the checkpoint \(entries: optimizer, iter\)"):
        read_official(path)
    with pytest.raises(CheckpointError, match=r"no entry 'params' in the checkpoint \(it has: optimizer, iter\)"):
        read_official(path, key="params")


def test_no_implicit_unpickling_anywhere_in_srkd():
    """Guard: only convert.py reads pickles (through its restricted unpickler); torch.load only with weights_only=True."""
    import re
    from pathlib import Path

    import srkd

    root = Path(srkd.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()
        assert "weights_only=False" not in text, rel
        assert not re.search(r"\bpickle\.(load|loads|Unpickler)\b", text) or rel == "checkpoint/unpickle.py", rel
        for call in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
            assert "weights_only=True" in call.group(0), f"{rel}: {call.group(0)}"
    convert_src = (root / "checkpoint" / "convert.py").read_text(encoding="utf-8")
    assert "torch.load(" not in convert_src and "pickle.load(" not in convert_src


def test_an_expanded_view_is_refused_before_it_is_materialised(tmp_path) -> None:
    """A stride-0 view lets a few bytes stand for a tensor of any size; `.to(float32)` would then allocate it."""
    state = {"input.weight": torch.zeros(1).expand(64, 1, 3, 3)}
    path = tmp_path / "expanded.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="expanded view"):
        read_torch_pickle(path)


def test_converted_kwargs_must_fit_the_file(tmp_path) -> None:
    """Sizes read from shapes (or given with --set) are checked against the file before the model is built: an
    EDSR of 8 features in a few kB, converted with n_feats=3000, would otherwise build a 1 GB network first."""
    from srkd.models import build_model

    path = tmp_path / "tiny.pth"
    small = build_model("edsr", n_feats=8, n_resblocks=1, scale=2).state_dict()
    basicsr = {k.replace("head.", "conv_first.").replace("tail.upsample.", "upsample.").replace("tail.conv_last.", "conv_last."): v
               for k, v in small.items()}
    torch.save(basicsr, path)
    convert(path)  # as it is: fine
    with pytest.raises(CheckpointError, match="more weights than a"):
        convert(path, overrides={"n_feats": 3000})
