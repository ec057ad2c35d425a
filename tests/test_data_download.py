"""Downloads and archive extraction: https only, resume, checksums, and crafted malicious archives.

There is no https server offline, so the transfer logic is exercised against a local ``http.server`` on
127.0.0.1 through ``download(..., _allow_insecure_for_tests=True)``; the https-only rule itself is tested
without any network (refused before a connection is made).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from srkd.data import download as dl
from srkd.data import registry
from srkd.data.images import write_image
from srkd.errors import DataError


# ------------------------------------------------------------------------------------------------ server
class _Server:
    """Serves ``files`` with Range support; can cut the first full response short or redirect."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.truncate_first: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if self.path in server.truncate_first and not rng:
                    server.truncate_first.discard(self.path)
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _payload(n: int = 300_000) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------------------------------------ download
@pytest.mark.parametrize("url", ["http://example.com/x.zip", "file:///etc/passwd", "ftp://example.com/a", "x.zip"])
def test_only_https_is_accepted(tmp_path, url):
    with pytest.raises(DataError, match="only https://"):
        dl.download(url, tmp_path / "x", None, progress=False)
    assert not any(tmp_path.iterdir())


def test_insecure_test_flag_is_loopback_only(tmp_path):
    with pytest.raises(DataError, match="only https://"):
        dl.download("http://example.com/x", tmp_path / "x", None, progress=False, _allow_insecure_for_tests=True)


def test_download_verifies_and_renames(server, tmp_path):
    body = _payload()
    server.files["/a.bin"] = body
    dest = tmp_path / "sub" / "a.bin"
    got = dl.download(f"{server.base}/a.bin", dest, _sha(body), progress=False, _allow_insecure_for_tests=True)
    assert got == _sha(body) and dest.read_bytes() == body
    assert not dest.with_name("a.bin.part").exists()
    n = len(server.requests)
    dl.download(f"{server.base}/a.bin", dest, _sha(body), progress=False, _allow_insecure_for_tests=True)
    assert len(server.requests) == n  # already in place and verified: no new request


def test_truncated_transfer_is_resumed_with_range(server, tmp_path):
    body = _payload()
    server.files["/a.bin"] = body
    server.truncate_first.add("/a.bin")
    dest = tmp_path / "a.bin"
    dl.download(f"{server.base}/a.bin", dest, _sha(body), progress=False, _allow_insecure_for_tests=True)
    assert dest.read_bytes() == body
    assert server.requests[0] == ("/a.bin", None)
    assert server.requests[1] == ("/a.bin", f"bytes={len(body) // 2}-")  # resumed, not restarted


def test_resume_from_existing_part_file(server, tmp_path):
    body = _payload()
    server.files["/a.bin"] = body
    dest = tmp_path / "a.bin"
    dest.with_name("a.bin.part").write_bytes(body[:1000])
    dl.download(f"{server.base}/a.bin", dest, _sha(body), progress=False, _allow_insecure_for_tests=True)
    assert dest.read_bytes() == body
    assert server.requests == [("/a.bin", "bytes=1000-")]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    server.files["/a.bin"] = _payload()
    dest = tmp_path / "a.bin"
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.download(f"{server.base}/a.bin", dest, "0" * 64, progress=False, _allow_insecure_for_tests=True)
    assert not dest.exists() and not dest.with_name("a.bin.part").exists()


def test_md5_is_checked_when_no_sha256(server, tmp_path):
    body = _payload(5000)
    server.files["/a.bin"] = body
    with pytest.raises(DataError, match="expected md5"):
        dl.download(f"{server.base}/a.bin", tmp_path / "a", None, progress=False, md5="0" * 32,
                    _allow_insecure_for_tests=True)
    dl.download(f"{server.base}/a.bin", tmp_path / "b", None, progress=False, md5=hashlib.md5(body).hexdigest(),
                _allow_insecure_for_tests=True)
    assert (tmp_path / "b").read_bytes() == body


def test_unverified_download_is_refused_then_allowed_without_refetch(server, tmp_path, capsys):
    body = _payload(5000)
    server.files["/a.bin"] = body
    dest = tmp_path / "a.bin"
    with pytest.raises(DataError, match="--allow-unverified"):
        dl.download(f"{server.base}/a.bin", dest, None, progress=False, _allow_insecure_for_tests=True)
    assert _sha(body) in capsys.readouterr().err  # the computed sha256 is printed
    assert not dest.exists()
    got = dl.download(f"{server.base}/a.bin", dest, None, progress=False, allow_unverified=True,
                      _allow_insecure_for_tests=True)
    assert got == _sha(body) and dest.read_bytes() == body
    assert server.requests[-1] == ("/a.bin", f"bytes={len(body)}-")  # nothing re-downloaded (416)


def test_redirect_to_insecure_url_is_refused(server, tmp_path):
    server.redirects["/r"] = "http://example.com/evil.bin"
    with pytest.raises(DataError, match="only https://"):
        dl.download(f"{server.base}/r", tmp_path / "x", None, progress=False, _allow_insecure_for_tests=True)


def test_http_error_is_one_clear_line(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        dl.download(f"{server.base}/missing", tmp_path / "x", None, progress=False, _allow_insecure_for_tests=True)


# ------------------------------------------------------------------------------------------------ archives
def _zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
            else:
                tf.addfile(m)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _assert_refused(archive: Path, dest: Path, match: str) -> None:
    before = set(dest.parent.parent.rglob("*"))
    with pytest.raises(DataError, match=match) as exc:
        dl.safe_extract(archive, dest)
    assert str(archive) in str(exc.value) and "\n" not in str(exc.value)
    assert not dest.exists()
    assert set(dest.parent.parent.rglob("*")) == before  # no temp folder, nothing written anywhere


@pytest.fixture
def work(tmp_path):
    (tmp_path / "out").mkdir()
    return tmp_path


def test_zip_slip_refused(work):
    archive = _zip(work / "a.zip", {"ok.txt": b"1", "../evil.txt": b"x"})
    _assert_refused(archive, work / "out" / "x", r"'\.\.'")
    assert not (work / "evil.txt").exists()


def test_zip_backslash_traversal_refused(work):
    archive = _zip(work / "a.zip", {"..\\..\\evil.txt": b"x"})
    _assert_refused(archive, work / "out" / "x", r"'\.\.'")


def test_zip_absolute_path_refused(work):
    archive = _zip(work / "a.zip", {"/tmp/evil.txt": b"x"})
    _assert_refused(archive, work / "out" / "x", "absolute path")


def test_zip_symlink_refused(work):
    archive = _zip(work / "a.zip", {"a.txt": b"1"}, symlinks={"link": "/etc"})
    _assert_refused(archive, work / "out" / "x", "symbolic link")


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_tar_dotdot_refused(work, mode):
    archive = _tar(work / "a.tar", [("d/ok.txt", b"1"), ("d/../../evil.txt", b"x")], mode)
    _assert_refused(archive, work / "out" / "x", r"'\.\.'")
    assert not (work / "evil.txt").exists()


def test_tar_absolute_refused(work):
    archive = _tar(work / "a.tgz", [("/tmp/srkd-evil.txt", b"x")])
    _assert_refused(archive, work / "out" / "x", "absolute path")
    assert not Path("/tmp/srkd-evil.txt").exists()


@pytest.mark.parametrize("target", ["/etc", "../../outside", "a/../../../x"])
def test_tar_escaping_symlink_refused(work, target):
    archive = _tar(work / "a.tgz", [("sub/a.txt", b"1"), _link("sub/link", target)])
    _assert_refused(archive, work / "out" / "x", "outside the target")


def test_tar_escaping_hardlink_refused(work):
    archive = _tar(work / "a.tgz", [_link("h", "../../etc/passwd", tarfile.LNKTYPE)])
    _assert_refused(archive, work / "out" / "x", "outside the target")


def test_tar_write_through_symlink_refused(work):
    # an internal-looking link chain that would make a later member land outside
    archive = _tar(work / "a.tgz", [_link("up", ".."), ("up/evil.txt", b"x")])
    with pytest.raises(DataError):
        dl.safe_extract(archive, work / "out" / "x")
    assert not (work / "out" / "evil.txt").exists()


def test_tar_device_refused(work):
    dev = tarfile.TarInfo("dev/null2")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    archive = _tar(work / "a.tgz", [dev])
    _assert_refused(archive, work / "out" / "x", "device file")


def test_good_archives_extract_completely(work):
    z = _zip(work / "a.zip", {"top/a.txt": b"A", "top/b/c.txt": b"C"})
    t = _tar(work / "a.tar.xz", [("top/a.txt", b"A"), _link("top/l", "a.txt"),
                                 _link("top/h", "top/a.txt", tarfile.LNKTYPE)], "w:xz")
    out_z = dl.safe_extract(z, work / "out" / "z")
    assert (out_z / "top/a.txt").read_bytes() == b"A" and (out_z / "top/b/c.txt").read_bytes() == b"C"
    out_t = dl.safe_extract(t, work / "out" / "t")
    assert not (out_t / "top/l").is_symlink() and (out_t / "top/l").read_bytes() == b"A"  # links become copies
    assert (out_t / "top/h").read_bytes() == b"A" and not (out_t / "top/h").is_symlink()
    with pytest.raises(DataError, match="already exists"):
        dl.safe_extract(z, out_z)


def _outside(work: Path) -> dict[Path, bytes]:
    """A folder beside the extraction target holding images, as a crafted archive's links would aim at."""
    (work / "outside").mkdir(exist_ok=True)
    files = {work / "outside" / f"{i}.png": bytes([i]) * 100 for i in range(3)}
    for path, data in files.items():
        path.write_bytes(data)
    return files


@pytest.mark.parametrize("chain", [
    # x -> . makes x/x/x the target itself, so the text of the next link looks inside while it points outside
    [_link("x", "."), _link("x/x/x/HR", "../../outside")],
    [_link("x", "."), _link("x/x/x/x/HR", "../../../outside")],
    [_link("d", "."), _link("d/d/up", "../.."), ("d/d/up/evil.txt", b"x")],
    [("a/b.txt", b"1"), _link("a/c", "../a"), _link("a/c/c/HR", "../../../outside")],
    [_link("HR", "../outside")],
    [_link("x", "."), _link("x/x/h", "../../outside/0.png", tarfile.LNKTYPE)],
])
def test_tar_link_chains_are_refused_and_nothing_outside_is_touched(work, chain):
    files = _outside(work)
    archive = _tar(work / "chain.tgz", chain)
    _assert_refused(archive, work / "out" / "x", "")
    assert {p: p.read_bytes() for p in files} == files and not (work / "out" / "evil.txt").exists()
    assert not any(p.is_symlink() for p in work.rglob("*"))


def test_install_never_moves_files_from_outside(work):
    """Defence in depth: the HR folder an install moves images from must really be inside the extraction."""
    files = _outside(work)
    extracted = work / "out" / "extracted"
    extracted.mkdir()
    (extracted / "HR").symlink_to(work / "outside", target_is_directory=True)
    with pytest.raises(DataError, match="not inside the extracted archive"):
        dl._move_images(extracted / "HR", work / "out" / "dataset", extracted)
    assert {p: p.read_bytes() for p in files} == files


def test_extracted_folders_keep_the_umask(work):
    old = os.umask(0o022)
    try:
        out = dl.safe_extract(_zip(work / "a.zip", {"top/a.txt": b"A"}), work / "out" / "z")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755


def test_not_an_archive(work):
    (work / "a.zip").write_bytes(b"not an archive at all")
    _assert_refused(work / "a.zip", work / "out" / "x", "not a zip or tar")


# ------------------------------------------------------------------------------------------------ install
def _png_bytes(tmp: Path, name: str, h: int, w: int, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    write_image(tmp / name, torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
    return (tmp / name).read_bytes()


def test_install_files_dataset_then_verify(server, tmp_path, monkeypatch):
    pngs = {f"HR/img{i}.png": _png_bytes(tmp_path, f"s{i}.png", 20, 24, i) for i in range(3)}
    pngs["LR_bicubic/X2/img0x2.png"] = _png_bytes(tmp_path, "l.png", 10, 12, 9)
    for rel, data in pngs.items():
        src = rel.replace("HR/", "gt/").replace("LR_bicubic/", "lr/")
        server.files[f"/repo/{src}"] = data
    info = registry.DatasetInfo("Tiny", "benchmark", 3, f"{server.base}/repo/", "files", None,
                                hr_subdir="gt", lr_subdir="lr")
    monkeypatch.setitem(registry.DATASETS, "Tiny", info)
    monkeypatch.setattr(dl, "file_sha256", lambda name: {r: _sha(d) for r, d in pngs.items()})
    root = tmp_path / "root"
    folder = dl.install("tiny", root, progress=False, _allow_insecure_for_tests=True)
    assert folder == root / "Tiny"
    assert sorted(p.name for p in (folder / "HR").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert (folder / "LR_bicubic/X2/img0x2.png").read_bytes() == pngs["LR_bicubic/X2/img0x2.png"]
    assert registry.status("Tiny", root) == (True, "sha256 of every file")
    assert not any(p.name.endswith((".part", ".staging")) for p in root.rglob("*"))
    ok, line = dl.verify("Tiny", root)
    assert ok and "OK (4 files" in line
    (folder / "HR/img1.png").write_bytes(b"tampered")
    ok, line = dl.verify("Tiny", root)
    assert not ok and "HR/img1.png" in line
    # a missing or damaged install record does not turn the set into "placed by hand": the shipped hashes decide
    for damage in ("{not json", None):
        if damage is None:
            (folder / registry.MARKER).unlink()
        else:
            (folder / registry.MARKER).write_text(damage)
        ok, line = dl.verify("Tiny", root)
        assert not ok and "HR/img1.png" in line and "no readable install record" in line


def test_shipped_checksums_are_package_data():
    """The per-file hashes are a JSON file beside the code, listed in pyproject's package data."""
    from importlib import resources

    import srkd.data.checksums as sums

    data = json.loads(resources.files("srkd.data").joinpath("checksums.json").read_text())
    assert set(data["files"]) == {"Set5", "Set14", "T91", "BSD200", "General100"}
    assert sums.file_sha256("Set5") == data["files"]["Set5"]
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"data/*.json"' in pyproject


def test_md5_only_archive_gets_its_sha256_recorded_and_used(server, tmp_path, monkeypatch):
    body = _archive_dataset(server, tmp_path, monkeypatch, None)
    info = registry.DATASETS["Tiny"]
    monkeypatch.setitem(registry.DATASETS, "Tiny", registry.DatasetInfo(
        **{**info.__dict__, "md5": hashlib.md5(body).hexdigest()}))
    info = registry.DATASETS["Tiny"]
    root = tmp_path / "root"
    assert registry.checksum_kind(info, root) == "md5 (published); sha256 recorded at first download"
    folder = dl.install("Tiny", root, progress=False, _allow_insecure_for_tests=True)
    assert "its sha256 recorded now" in registry.read_marker(folder)["verified_by"]
    assert registry.recorded_sha256(info, root) == _sha(body)
    assert registry.checksum_kind(info, root) == "md5 (published) + sha256 (recorded)"
    # later downloads are held to the recorded sha256: a tampered record makes them fail
    shutil.rmtree(folder)
    recorded = root / "downloads" / registry.RECORDED
    recorded.write_text(recorded.read_text().replace(_sha(body), "0" * 64))
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.install("Tiny", root, progress=False, _allow_insecure_for_tests=True)


def test_data_list_says_which_checksum(tmp_path, capsys):
    from srkd.cli.main import main

    assert main(["data", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sha256 per file" in out and "md5 (published)" in out and "sha256 (published)" in out


def test_install_files_with_bad_file_leaves_no_dataset(server, tmp_path, monkeypatch):
    good = _png_bytes(tmp_path, "a.png", 8, 8, 1)
    server.files["/r/a.png"] = good
    server.files["/r/b.png"] = b"corrupted"
    info = registry.DatasetInfo("Tiny", "train", 2, f"{server.base}/r/", "files", None, hr_subdir="")
    monkeypatch.setitem(registry.DATASETS, "Tiny", info)
    monkeypatch.setattr(dl, "file_sha256", lambda name: {"HR/a.png": _sha(good), "HR/b.png": _sha(good)})
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.install("Tiny", tmp_path / "root", progress=False, _allow_insecure_for_tests=True)
    assert not (tmp_path / "root" / "Tiny").exists()
    assert registry.status("Tiny", tmp_path / "root") == (False, "-")


def _archive_dataset(server, tmp_path, monkeypatch, sha256: str | None) -> bytes:
    members = [(f"pack/Tiny_HR/im{i}.png", _png_bytes(tmp_path, f"h{i}.png", 16, 16, i)) for i in range(2)]
    members.append(("pack/LR/X2/im0x2.png", _png_bytes(tmp_path, "l0.png", 8, 8, 5)))
    members.append(("pack/readme.txt", b"hello"))
    body = _tar(tmp_path / "pack.tar.gz", members).read_bytes()
    server.files["/pack.tar.gz"] = body
    info = registry.DatasetInfo("Tiny", "benchmark", 2, f"{server.base}/pack.tar.gz", "tar.gz",
                                sha256 if sha256 != "auto" else _sha(body),
                                hr_subdir="pack/Tiny_HR", lr_subdir="pack/LR")
    monkeypatch.setitem(registry.DATASETS, "Tiny", info)
    return body


def test_install_archive_dataset(server, tmp_path, monkeypatch):
    body = _archive_dataset(server, tmp_path, monkeypatch, "auto")
    root = tmp_path / "root"
    folder = dl.install("Tiny", root, progress=False, _allow_insecure_for_tests=True)
    assert sorted(p.name for p in (folder / "HR").iterdir()) == ["im0.png", "im1.png"]
    assert (folder / "LR_bicubic/X2/im0x2.png").is_file()
    marker = registry.read_marker(folder)
    assert marker["archive_sha256"] == _sha(body) and marker["verified_by"] == "sha256 of the archive"
    assert not (root / "downloads" / "pack.tar.gz").exists()  # archive removed after install
    assert dl.verify("Tiny", root)[0]
    n = len(server.requests)
    assert dl.install("Tiny", root, progress=False, _allow_insecure_for_tests=True) == folder
    assert len(server.requests) == n  # idempotent, offline


def test_install_unverified_archive_needs_flag(server, tmp_path, monkeypatch):
    _archive_dataset(server, tmp_path, monkeypatch, None)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="--allow-unverified"):
        dl.install("Tiny", root, progress=False, _allow_insecure_for_tests=True)
    assert not (root / "Tiny").exists()
    folder = dl.install("Tiny", root, progress=False, allow_unverified=True, _allow_insecure_for_tests=True)
    assert registry.read_marker(folder)["verified_by"] == "none"


def test_manual_dataset_and_foreign_folder(tmp_path):
    with pytest.raises(DataError, match="manga109.org"):
        dl.install("Manga109", tmp_path)
    (tmp_path / "Set5" / "HR").mkdir(parents=True)
    with pytest.raises(DataError, match="not installed by srkd"):
        dl.install("Set5", tmp_path)


def test_registry_entries_are_consistent():
    from srkd.data.checksums import file_sha256

    for info in registry.DATASETS.values():
        assert info.url is None or info.url.startswith("https://"), info.name
        if info.archive == "files":
            files = file_sha256(info.name)
            assert sum(r.startswith("HR/") for r in files) == info.n_images, info.name
            assert all(len(d) == 64 for d in files.values())
        elif info.url is not None:
            assert info.sha256 or info.md5, f"{info.name}: needs --allow-unverified"
    assert registry.lookup("bsd100").name == "B100" and registry.lookup("SET5").name == "Set5"
    assert registry.lookup("nope") is None
