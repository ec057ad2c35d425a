"""The teacher zoo: catalogue, `srkd teachers list/download`, `zoo:NAME` specs, and what goes wrong.

Downloads are served offline: from a loopback HTTP server over a temporary folder, or as `--from` local copies
of the files in ../shared/weights. Nothing here needs the internet.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from conftest import shared_path

from srkd.checkpoint import load_model, read_metadata, zoo
from srkd.checkpoint.fetch import fetch
from srkd.cli.main import main
from srkd.errors import CheckpointError, DataError
from srkd.models import ARCHITECTURES

SHARED_FOLDER = {"bsrn": "bsrn", "smfanet": "smfanet", "imdn": "imdn", "carn_m": "carn", "pan": "pan",
                 "rfdn": "rfdn", "vdsr": "vdsr"}


def shared_file(entry: zoo.ZooEntry) -> Path:
    name = "pytorch-vdsr_model_epoch_50.pth" if entry.arch == "vdsr" else entry.filename
    return shared_path("weights", SHARED_FOLDER[entry.arch], name)


@pytest.fixture(autouse=True)
def _private_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SRKD_DATA", str(tmp_path / "root"))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep stderr for srkd's own one-line errors
        pass


@pytest.fixture
def loopback(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_catalogue_is_consistent() -> None:
    entries = zoo.catalog()
    assert len(entries) >= 16
    for e in entries.values():
        assert e.arch in ARCHITECTURES, e.name
        assert len(e.sha256) == 64 and len(e.commit) == 40, e.name
        assert e.url.startswith("https://raw.githubusercontent.com/") and e.url.endswith(e.path)
        assert set(e.set5_srkd) == set(e.scales), e.name
        assert all(25 < v < 40 for v in e.set5_srkd.values()), e.name


@pytest.mark.shared
def test_catalogue_sha256_and_params_match_the_shared_copies() -> None:
    from srkd.checkpoint.convert import find_layout, read_official

    for e in zoo.catalog().values():
        path = shared_file(e)
        from srkd.data.download import sha256_file

        assert sha256_file(path) == e.sha256, e.name
        state = read_official(path)
        assert sum(t.numel() for t in state.values() if t.is_floating_point()) == e.params, e.name
        kwargs, _ = find_layout(state, "auto", e.arch, path).infer(state)
        inferred = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if k != "scale"}
        assert inferred == e.kwargs, e.name  # what `list` counts FLOPs of


def test_unknown_name_and_not_downloaded_are_one_line(capsys) -> None:
    assert main(["teachers", "download", "bsrn-x5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown zoo model 'bsrn-x5'" in err and "bsrn-x4" in err
    assert main(["info", "zoo:bsrn-x4", "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "srkd teachers download bsrn-x4" in err
    with pytest.raises(CheckpointError, match="unknown zoo model"):
        zoo.resolve("zoo:nope")


def test_list_as_json_on_stdout(capsys) -> None:
    assert main(["teachers", "list", "--json", "-"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names == list(zoo.catalog())
    carn = rows[names.index("carn-m")]
    assert carn["scales"] == [2, 3, 4] and carn["licence"] == "MIT" and not carn["cached"]
    # CARN-M's paper (Table 1) gives 32.5 G Mult-Adds at x4 for a 1280x720 output; SMFANet's paper 11 / 28 G at
    # x4 for SMFANet / SMFANet+ (its attention's pooling and variance are not multiply-adds of a conv: not counted).
    assert carn["gflops_720p"] == pytest.approx(32.5, abs=0.1)
    plus, small = rows[names.index("smfanet-plus-x4")], rows[names.index("smfanet-x4")]
    assert plus["gflops_720p"] > 2 * small["gflops_720p"]


@pytest.mark.shared
def test_download_over_loopback_verifies_converts_and_caches(loopback, capsys) -> None:
    www, base = loopback
    entry = zoo.get("pan-x4")
    shutil.copy(shared_file(entry), www / entry.filename)
    path = fetch("pan-x4", source=f"{base}/{entry.filename}", progress=False, _allow_insecure_for_tests=True)
    assert path == zoo.cached_path("pan-x4") and path.is_file()
    meta = read_metadata(path)
    assert meta["arch"] == "pan" and meta["scales"] == [4]
    assert meta["zoo_name"] == "pan-x4" and meta["source_url"] == entry.url and meta["source_sha256"] == entry.sha256
    model, _ = load_model("zoo:pan-x4", scale=4)
    assert model.scale == 4
    (www / entry.filename).unlink()  # cached: a second download does not touch the network
    assert fetch("pan-x4", source=f"{base}/{entry.filename}", _allow_insecure_for_tests=True) == path


def test_checksum_mismatch_caches_nothing(loopback, tmp_path, capsys) -> None:
    www, base = loopback
    (www / "PANx4_DF2K.pth").write_bytes(b"not the published file" * 100)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("pan-x4", source=f"{base}/PANx4_DF2K.pth", progress=False, _allow_insecure_for_tests=True)
    cache = zoo.cache_dir()
    assert not zoo.cached_path("pan-x4").exists()
    assert not any(p.is_file() for p in cache.rglob("*")) if cache.exists() else True
    # the same through the CLI, with a local copy: one line, exit 2
    bad = tmp_path / "copy.pth"
    bad.write_bytes(b"x" * 1000)
    assert main(["teachers", "download", "pan-x4", "--from", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "checksum mismatch" in err and "nothing was cached" in err
    assert not zoo.cached_path("pan-x4").exists()


def test_plain_http_to_a_real_host_is_refused() -> None:
    with pytest.raises(DataError, match="only https"):
        fetch("pan-x4", source="http://example.invalid/PANx4_DF2K.pth", progress=False)


@pytest.mark.shared
def test_download_from_a_local_copy_then_train_a_kd_student_from_zoo(tmp_path, capsys) -> None:
    assert main(["teachers", "download", "imdn-x4", "--from", str(shared_file(zoo.get("imdn-x4")))]) == 0
    assert "verified and converted" in capsys.readouterr().out
    train = shared_path("data", "train", "T91")
    code = main([
        "train", "configs/edsr-x4-kd-quick.yaml", "--out", str(tmp_path / "run"),
        "--set", "teacher.checkpoint=zoo:imdn-x4", "--set", "teacher.arch=imdn",
        "--set", f"data.train=[{train}]", "--set", "data.val=[]", "--set", "train.iterations=2",
        "--set", "data.batch_size=2", "--set", "data.lr_patch=16", "--set", "student.arch=imdn",
        "--set", "student.kwargs={num_feat: 16, num_block: 2}", "--set", "train.precision=fp32",
    ])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "last.safetensors").is_file()


@pytest.mark.shared
def test_demo_takes_a_downloaded_zoo_teacher_by_name(capsys) -> None:
    from srkd.cli.demo import teacher_path
    from srkd.demo import TEACHER_PATH

    assert teacher_path(None) == TEACHER_PATH
    with pytest.raises(CheckpointError, match="srkd teachers download bsrn-x2"):
        teacher_path("bsrn-x2")  # never downloads: the demo stays offline
    fetch("bsrn-x2", source=str(shared_file(zoo.get("bsrn-x2"))))
    assert teacher_path("bsrn-x2") == teacher_path("zoo:bsrn-x2") == zoo.cached_path("bsrn-x2")
