"""Fetching and unpacking datasets without trusting the network or the archive.

- ``download``: https only (also after redirects), resumable through HTTP ``Range`` into ``<dest>.part``,
  retried on dropped connections, checksum verified *before* the atomic rename into place; a file that fails
  its checksum is deleted, never left where a later run could pick it up.
- ``safe_extract``: zip and tar (.gz/.bz2/.xz) into a temporary folder renamed into place at the end; absolute
  paths, ``..``, device files and FIFOs are refused with one :class:`~srkd.errors.DataError` naming the archive
  and the member. Tar members pass Python's ``data`` filter where it exists; no link is ever created: a tar link
  to a file extracted before it becomes a copy (found by real path), any other link is refused.
- ``install``: the two above plus the move of the HR (and LR) folders into ``<data root>/<Name>/`` with a record
  of every file's sha256, used by ``srkd data verify``.
- ``install_from_folder``: the same install from a local copy (offline machines), held to the same checksums,
  copied or linked into place.

Only the standard library's ``urllib`` is used: no third-party HTTP client, nothing shells out.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from srkd import __version__
from srkd.data import registry
from srkd.data.checksums import file_sha256
from srkd.data.images import is_image_file
from srkd.errors import DataError
from srkd.io import default_mode

CHUNK = 1 << 20
TIMEOUT_S = 60
RETRIES = 4
USER_AGENT = f"srkd/{__version__} (+https://github.com/; dataset download)"
# Refuse to unpack more than this (decompression bombs); Flickr2K, the largest set, is about 20 GB.
MAX_EXTRACT_BYTES = 64 << 30


# ---------------------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------------------
def _check_url(url: str, allow_insecure: bool) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if allow_insecure and parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return
    raise DataError(f"{url}: refusing to download over '{parts.scheme or 'no scheme'}' (only https:// URLs)")


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (Hugging Face sends files to its CDN) but never to a non-https URL."""

    def __init__(self, allow_insecure: bool) -> None:
        self.allow_insecure = allow_insecure

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        _check_url(newurl, self.allow_insecure)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Transient(Exception):
    """A dropped connection or short read: retry, resuming from what is on disk."""


def _hash_file(path: Path, algos: tuple[str, ...]) -> dict[str, Any]:
    hashes = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            for h in hashes.values():
                h.update(block)
    return hashes


def sha256_file(path: Path) -> str:
    return _hash_file(path, ("sha256",))["sha256"].hexdigest()


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    progress: bool = True,
    *,
    md5: str | None = None,
    allow_unverified: bool = False,
    _allow_insecure_for_tests: bool = False,
) -> str:
    """Fetch ``url`` to ``dest`` and return its sha256.

    ``sha256`` (preferred) or ``md5`` is checked before ``dest`` appears. With neither, the computed sha256 is
    printed and the file is refused unless ``allow_unverified``; the finished ``.part`` is kept, so re-running
    with ``--allow-unverified`` does not download it again. ``_allow_insecure_for_tests`` additionally accepts
    ``http://`` to a loopback address; it exists only so the tests can serve files offline and must never be
    set by user-facing code.
    """
    _check_url(url, _allow_insecure_for_tests)
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest.parent}: cannot create folder ({exc.strerror or exc})") from None
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        # Already in place (verified before its rename): re-hash, and fetch again only if it no longer matches.
        digest = _hash_file(dest, ("sha256", "md5"))
        if _matches(digest, sha256, md5) is not False:
            return digest["sha256"].hexdigest()
        dest.unlink()
    opener = urllib.request.build_opener(_HttpsOnlyRedirects(_allow_insecure_for_tests))
    last_error: Exception | None = None
    for attempt in range(RETRIES):
        try:
            _fetch(opener, url, part, progress)
            break
        except _Transient as exc:
            last_error = exc
            time.sleep(min(2**attempt, 10) if not _allow_insecure_for_tests else 0.05)
    else:
        raise DataError(f"{url}: download failed after {RETRIES} attempts ({last_error}); run again to resume")

    digest = _hash_file(part, ("sha256", "md5"))
    got = digest["sha256"].hexdigest()
    verdict = _matches(digest, sha256, md5)
    if verdict is False:
        part.unlink(missing_ok=True)
        expected = f"sha256 {sha256}" if sha256 else f"md5 {md5}"
        raise DataError(f"{url}: checksum mismatch (expected {expected}, got sha256 {got}); the file was deleted")
    if verdict is None and not allow_unverified:
        print(f"{dest.name}: sha256 {got}", file=sys.stderr)
        raise DataError(
            f"{url}: no published checksum to verify it against (computed sha256 {got}, printed above); "
            "re-run with --allow-unverified to use it anyway"
        )
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    return got


def _matches(digest: dict[str, Any], sha256: str | None, md5: str | None) -> bool | None:
    """True/False when a checksum is known and (mis)matches; None when there is nothing to check against."""
    if sha256:
        return digest["sha256"].hexdigest() == sha256.lower()
    if md5:
        return digest["md5"].hexdigest() == md5.lower()
    return None


def _fetch(opener: urllib.request.OpenerDirector, url: str, part: Path, progress: bool) -> None:
    """One attempt: append to ``part`` from where it stops; raise _Transient on a dropped transfer."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = opener.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # asked past the end: the part file is already complete
            return
        if exc.code in (408, 429, 500, 502, 503, 504):
            raise _Transient(f"HTTP {exc.code}") from None
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, DataError):  # a redirect to a refused scheme
            raise reason from None
        raise _Transient(str(reason)) from None
    with response:
        status_code = getattr(response, "status", 200)
        if offset and status_code == 206:
            start = _content_range_start(response.headers.get("Content-Range", ""))
            if start != offset:  # a confused server: drop what we have and start over
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start}, expected {offset}")
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        received = offset
        try:
            fh = open(part, mode)
        except OSError as exc:
            raise DataError(f"{part}: cannot write ({exc.strerror or exc})") from None
        with fh, _progress_bar(part.name[: -len(".part")], total, offset, progress) as advance:
            while True:
                try:
                    block = response.read(CHUNK)
                except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                    raise _Transient(f"connection lost at byte {received} ({exc})") from None
                if not block:
                    break
                try:
                    fh.write(block)
                except OSError as exc:  # disk full, read-only...: not worth retrying
                    raise DataError(f"{part}: cannot write ({exc.strerror or exc}); run again to resume") from None
                received += len(block)
                advance(len(block))
        if total is not None and received < total:
            raise _Transient(f"connection closed at byte {received} of {total}")


def _content_range_start(value: str) -> int:
    # "bytes 100-999/1000"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


@contextmanager
def _progress_bar(label: str, total: int | None, done: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


# ---------------------------------------------------------------------------------------------------------
# safe extraction
# ---------------------------------------------------------------------------------------------------------
def _member_path(archive: Path, name: str) -> PurePosixPath:
    """The relative path a member may be written to, or a DataError when it would leave the target."""
    if "\x00" in name:
        raise DataError(f"{archive}: member {_quote(name)} has a NUL byte in its name; refusing to extract")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise DataError(f"{archive}: member {_quote(name)} has an absolute path; refusing to extract")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: member {_quote(name)} contains '..' (path traversal); refusing to extract")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(root: Path, path: Path) -> bool:
    root_r = os.path.realpath(root)
    return os.path.commonpath([root_r, os.path.realpath(path)]) == root_r


def _write_member(archive: Path, root: Path, rel: PurePosixPath, source: IO[bytes], budget: list[int]) -> None:
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(root, target.parent):
        raise DataError(f"{archive}: member '{rel}' would be written outside the target through a link")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o644)
    with os.fdopen(fd, "wb") as out:
        for block in iter(lambda: source.read(CHUNK), b""):
            budget[0] -= len(block)
            if budget[0] < 0:
                raise DataError(f"{archive}: unpacks to more than {MAX_EXTRACT_BYTES >> 30} GiB; refusing")
            out.write(block)


def _extract_zip(archive: Path, root: Path, budget: list[int]) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = _member_path(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise DataError(f"{archive}: member '{info.filename}' is a symbolic link; refusing to extract")
            if info.is_dir() or str(rel) == ".":
                (root / rel).mkdir(parents=True, exist_ok=True)
                continue
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # bare permission bits are common
                raise DataError(f"{archive}: member '{info.filename}' is not a regular file; refusing to extract")
            with zf.open(info) as src:
                _write_member(archive, root, rel, src, budget)


def _extract_tar(archive: Path, root: Path, budget: list[int]) -> None:
    """Tar members one by one, each first vetted by Python's own ``data`` extraction filter where it exists
    (3.12, and 3.8-3.11 security releases) and then by srkd's rules.

    No link is ever created on disk. A link to a regular file already extracted becomes a copy of it, found by
    its *real* path (the folders it passes through resolved on disk, not its text); a link to a folder, to a
    missing member or out of the target is refused. Creating symlinks is what let a chain such as ``x -> .``
    then ``x/x/x/HR -> ../../outside`` pass a textual check while pointing outside, and the dataset install then
    moved files from there into the dataset; with no link on disk, every path under ``root`` is what it says.
    """
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
    vet = getattr(tarfile, "data_filter", None)
    with tf:
        for member in tf:
            rel = _member_path(archive, member.name)
            if vet is not None:
                try:
                    vet(member, str(root))
                except tarfile.FilterError as exc:
                    what = ("is a device file or FIFO" if isinstance(exc, tarfile.SpecialFileError)
                            else "points outside the target")
                    raise DataError(f"{archive}: member {_quote(member.name)} {what} (Python's tar data filter: "
                                    f"{str(exc)[:200]}); refusing to extract") from None
            if member.isdir():
                (root / rel).mkdir(parents=True, exist_ok=True)
                if not _inside(root, root / rel):
                    raise DataError(f"{archive}: folder {_quote(member.name)} escapes the target")
            elif member.isreg():
                src = tf.extractfile(member)
                assert src is not None
                with src:
                    _write_member(archive, root, rel, src, budget)
            elif member.issym() or member.islnk():
                _copy_link(archive, root, rel, member, budget)
            else:
                raise DataError(
                    f"{archive}: member {_quote(member.name)} is a device file or FIFO; refusing to extract"
                )


def _copy_link(archive: Path, root: Path, rel: PurePosixPath, member: tarfile.TarInfo, budget: list[int]) -> None:
    """A symlink or hard link member, written as a copy of the regular file it really points to in ``root``."""
    link = member.linkname.replace("\\", "/")
    if link.startswith("/") or "\x00" in link:
        raise DataError(f"{archive}: link {_quote(member.name)} has an absolute target; refusing to extract")
    # symlinks are relative to the member's folder, hard links to the archive root; resolved on disk
    base = (root / rel).parent if member.issym() else root
    base.mkdir(parents=True, exist_ok=True)
    source = Path(os.path.realpath(base / link))
    if not _inside(root, base) or not _inside(root, source):
        raise DataError(f"{archive}: link {_quote(member.name)} -> {_quote(member.linkname)} points outside the "
                        "target; refusing to extract")
    if source.is_symlink() or not source.is_file():
        raise DataError(f"{archive}: link {_quote(member.name)} -> {_quote(member.linkname)} is not a link to a "
                        "file extracted before it; refusing to extract")
    with open(source, "rb") as src_fh:
        _write_member(archive, root, rel, src_fh, budget)


def _quote(name: str) -> str:
    """A member name for a message: quoted, and cut (a crafted name can be megabytes long)."""
    return repr(name if len(name) <= 120 else name[:120] + "...")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` (zip or tar, optionally gz/bz2/xz) into the new folder ``dest``, all or nothing."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"{archive}: no such archive")
    if dest.exists():
        raise DataError(f"{dest}: already exists; refusing to extract over it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, default_mode(0o777))  # mkdtemp's folders are private (0o700); a dataset folder is not
    budget = [MAX_EXTRACT_BYTES]
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, budget)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, budget)
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
        os.replace(tmp, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: corrupt archive ({exc})") from None
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: cannot extract ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# ---------------------------------------------------------------------------------------------------------
# installing a registered dataset
# ---------------------------------------------------------------------------------------------------------
def install(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    allow_unverified: bool = False,
    progress: bool = True,
    keep_archive: bool = False,
    _allow_insecure_for_tests: bool = False,
) -> Path:
    """Download, verify and install dataset ``name`` under the data root; returns its folder.

    Idempotent: an installed dataset is returned as is. The dataset folder appears in one rename, so an
    interrupted install leaves at most a staging folder (and a resumable ``.part``) under ``<root>/downloads``.
    """
    info = registry.get(name)
    base = registry.data_root(root)
    final = base / info.name
    if (final / registry.MARKER).exists():
        return final
    if info.url is None:
        raise DataError(f"{info.name}: no public download; " + info.manual.format(root=base))
    downloads = base / "downloads"
    try:
        downloads.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{downloads}: cannot create the download folder ({exc.strerror or exc})") from None
    with _exclusive(downloads / f"{info.name}.lock"):  # DDP ranks or two shells installing the same set
        if (final / registry.MARKER).exists():
            return final
        if final.exists():
            raise DataError(f"{final}: exists but was not installed by srkd; move it away to download {info.name}")
        staging = Path(tempfile.mkdtemp(prefix=f".{info.name}.", suffix=".staging", dir=base))
        os.chmod(staging, default_mode(0o777))  # becomes the dataset folder: the umask's mode, not mkdtemp's 0o700
        try:
            if info.archive == "files":
                record = _install_files(info, downloads / info.name, staging, progress, _allow_insecure_for_tests)
            else:
                record = _install_archive(info, downloads, staging, allow_unverified, progress, keep_archive,
                                          _allow_insecure_for_tests)
            (staging / registry.MARKER).write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Advisory inter-process lock (POSIX); elsewhere a no-op."""
    try:
        import fcntl  # inside: POSIX only (Windows has no fcntl, and the lock becomes a no-op there)
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _record(info: registry.DatasetInfo, verified_by: str, files: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "url": info.url,
        "verified_by": verified_by,
        "files": files,
        "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "srkd_version": __version__,
        **extra,
    }


def _install_files(
    info: registry.DatasetInfo, cache: Path, staging: Path, progress: bool, insecure: bool
) -> dict[str, Any]:
    """Fetch each listed file (resumable: finished files stay in ``cache`` until the install succeeds)."""
    expected = file_sha256(info.name)
    if not expected:
        raise DataError(f"{info.name}: srkd has no file list for this dataset (a packaging bug)")
    assert info.url is not None
    items = sorted(expected.items())
    with _count_bar(info.name, len(items), progress) as advance:
        for rel, digest in items:
            url = info.url + urllib.parse.quote(_source_path(info, rel))
            download(url, cache / rel, digest, progress=False, _allow_insecure_for_tests=insecure)
            advance(1)
    for rel in expected:
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(cache / rel, staging / rel)
    shutil.rmtree(cache, ignore_errors=True)
    return _record(info, "sha256 of every file", dict(expected))


def _source_path(info: registry.DatasetInfo, rel: str) -> str:
    """Install path (``HR/x.png``, ``LR_bicubic/X2/xx2.png``) -> path under the source's base URL."""
    head, _, rest = rel.partition("/")
    sub = info.hr_subdir if head == registry.HR_DIR else (info.lr_subdir or "")
    return f"{sub}/{rest}" if sub else rest


def _install_archive(
    info: registry.DatasetInfo,
    downloads: Path,
    staging: Path,
    allow_unverified: bool,
    progress: bool,
    keep_archive: bool,
    insecure: bool,
) -> dict[str, Any]:
    assert info.url is not None
    archive = downloads / PurePosixPath(urllib.parse.urlsplit(info.url).path).name
    recorded = registry.recorded_sha256(info, downloads.parent)
    archive_sha = download(info.url, archive, info.sha256 or recorded, progress, md5=info.md5,
                           allow_unverified=allow_unverified, _allow_insecure_for_tests=insecure)
    if info.sha256:
        verified_by = "sha256 of the archive"
    elif recorded:
        verified_by = "sha256 of the archive (recorded at its first md5-verified download) and its md5"
    elif info.md5:
        # the source publishes md5 only: the sha256 of the file that matched it is recorded, so every later
        # download of this set is held to sha256
        registry.record_sha256(info, downloads.parent, archive_sha)
        verified_by = "md5 of the archive (its sha256 recorded now)"
    else:
        verified_by = "none"
    extracted = safe_extract(archive, staging / ".extracted")
    try:
        hr_src = _find_hr(extracted, info)
        _move_images(hr_src, staging / registry.HR_DIR, extracted)
        if info.lr_subdir and (extracted / info.lr_subdir).is_dir():
            for scale_dir in sorted((extracted / info.lr_subdir).iterdir()):
                if scale_dir.is_dir():
                    _move_images(scale_dir, staging / registry.LR_DIR / scale_dir.name, extracted)
    finally:
        shutil.rmtree(extracted, ignore_errors=True)
    files = {
        p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()
    }
    n_hr = sum(1 for rel in files if rel.startswith(f"{registry.HR_DIR}/"))
    if n_hr != info.n_images:
        print(f"warning: {info.name}: {n_hr} HR images installed, expected {info.n_images}", file=sys.stderr)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return _record(info, verified_by, files, archive_sha256=archive_sha)


def _find_hr(extracted: Path, info: registry.DatasetInfo) -> Path:
    """The HR folder inside an archive: the registered one, else the only folder that holds images."""
    hinted = extracted / info.hr_subdir
    if hinted.is_dir():
        return hinted
    candidates = [d for d in [extracted, *extracted.rglob("*")] if d.is_dir() and any(
        is_image_file(p) and p.is_file() for p in d.iterdir())]
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(
        f"{info.url}: the archive has no folder '{info.hr_subdir}' and {len(candidates)} image folders; "
        "its layout changed — please report this"
    )


def _move_images(src: Path, dst: Path, within: Path) -> None:
    """Move the image files of ``src`` (a folder of the extracted archive ``within``) into ``dst``; a ``src``
    whose real path leaves ``within`` is refused, so nothing from elsewhere can ever enter a dataset."""
    if src.is_symlink() or not _inside(within, src):
        raise DataError(f"{src}: not inside the extracted archive {within}; refusing to install from it")
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir()):
        if p.is_file() and not p.is_symlink() and is_image_file(p):
            os.replace(p, dst / p.name)


@contextmanager
def _count_bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _local_source(folder: Path, rel: str) -> Path | None:
    """Where install path ``rel`` (``HR/x.png``, ``LR_bicubic/X2/xx2.png``) is in a local copy of a set: at the
    same place under ``folder`` (a set root in the installed layout), or, for HR images, directly in ``folder``
    (a flat folder of HR images, as ``../shared/data/train/T91`` is)."""
    candidates = [folder / rel]
    head, _, rest = rel.partition("/")
    if head == registry.HR_DIR:
        candidates.append(folder / rest)
    return next((c for c in candidates if c.is_file()), None)


def install_from_folder(
    name: str,
    folder: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    link: bool = False,
    allow_unverified: bool = False,
) -> tuple[Path, bool]:
    """Install dataset ``name`` from a local copy instead of the network; returns (its folder, newly installed).

    Offline machines (CI, clusters, a colleague's disk) already hold the sets; a recipe that names ``T91`` then
    finds them under the data root like a download. The copy is held to what a download would be: every file
    srkd ships a sha256 for must be there and match, or nothing is installed. ``link`` puts absolute symbolic
    links into the data root instead of copies (nothing duplicated; the copy must then stay where it is, and
    ``srkd data verify`` re-hashes through the links). A set srkd ships no per-file hashes for (those fetched as
    archives) needs ``allow_unverified``: its images are taken as they are and the record says so.
    """
    info = registry.get(name)
    src = Path(folder).expanduser()
    if not src.is_dir():
        raise DataError(f"{src}: no such folder (--from takes a local copy of {info.name})")
    src = src.resolve()
    base = registry.data_root(root)
    final = base / info.name
    expected = file_sha256(info.name)
    if expected:
        sources: dict[str, Path] = {}
        missing, changed = [], []
        for rel, digest in sorted(expected.items()):
            found = _local_source(src, rel)
            if found is None:
                missing.append(rel)
            elif sha256_file(found) != digest:
                changed.append(rel)
            else:
                sources[rel] = found
        if missing or changed:
            def few(items: list[str]) -> str:
                return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

            what = "; ".join(part for part in (f"{len(missing)} missing ({few(missing)})" if missing else "",
                                               f"{len(changed)} differ ({few(changed)})" if changed else "") if part)
            lr_missing = any(r.startswith(f"{registry.LR_DIR}/") for r in missing)
            layout = " (give the set's root, holding HR/ and LR_bicubic/)" if lr_missing else ""
            raise DataError(f"{src}: not srkd's {info.name}: of its {len(expected)} files, {what}{layout}; "
                            "nothing was installed")
        verified_by = "sha256 of every file (installed from a local copy)"
    else:
        if not allow_unverified:
            raise DataError(f"{info.name}: srkd ships no per-file sha256 for it, so a local copy cannot be "
                            "verified; re-run with --allow-unverified to install it as it is")
        hr = src / registry.HR_DIR if (src / registry.HR_DIR).is_dir() else src
        sources = {f"{registry.HR_DIR}/{p.name}": p for p in sorted(hr.iterdir()) if p.is_file() and is_image_file(p)}
        lr = src / registry.LR_DIR
        if lr.is_dir():
            for scale_dir in sorted(d for d in lr.iterdir() if d.is_dir()):
                sources.update({f"{registry.LR_DIR}/{scale_dir.name}/{p.name}": p for p in sorted(scale_dir.iterdir())
                                if p.is_file() and is_image_file(p)})
        if not any(rel.startswith(f"{registry.HR_DIR}/") for rel in sources):
            raise DataError(f"{src}: holds no images (nor an HR/ folder of them)")
        verified_by = "none (installed from a local copy; srkd ships no per-file sha256 for it)"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{base}: cannot create the data root ({exc.strerror or exc})") from None
    with _exclusive(base / f".{info.name}.lock"):
        marker = registry.read_marker(final)
        if marker is not None:
            if marker.get("source") == str(src) and bool(marker.get("linked")) == link:
                return final, False
            raise DataError(f"{final}: {info.name} is already installed (from {marker.get('source') or marker.get('url')}); "
                            "remove that folder to install it from another place")
        if final.exists() or final.is_symlink():
            raise DataError(f"{final}: exists but was not installed by srkd; move it away to install {info.name}")
        staging = Path(tempfile.mkdtemp(prefix=f".{info.name}.", suffix=".staging", dir=base))
        os.chmod(staging, default_mode(0o777))
        try:
            files = {}
            for rel, path in sorted(sources.items()):
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if link:
                    os.symlink(path, target)
                else:
                    shutil.copyfile(path, target)
                files[rel] = expected.get(rel) or sha256_file(target)
            n_hr = sum(1 for rel in files if rel.startswith(f"{registry.HR_DIR}/"))
            if n_hr != info.n_images:
                print(f"warning: {info.name}: {n_hr} HR images installed, expected {info.n_images}", file=sys.stderr)
            record = _record(info, verified_by, files, source=str(src), linked=link)
            (staging / registry.MARKER).write_text(json.dumps(record, indent=1, sort_keys=True))
            os.replace(staging, final)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DataError(f"{final}: cannot install {info.name} ({exc.strerror or exc})") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return final, True


def verify(name: str, root: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Re-hash an installed dataset against the hashes srkd ships (sets fetched file by file) or, for sets
    installed from an archive, its install record: (ok, one-line summary). A missing or damaged record does not
    make a set "placed by hand" when srkd ships its hashes: the files are checked against those."""
    info = registry.get(name)
    folder = registry.data_root(root) / info.name
    if not registry.is_present(info.name, root):
        return False, f"{info.name}: not present in {folder} (run `srkd data download {info.name}`)"
    marker = registry.read_marker(folder)
    recorded = marker.get("files") if isinstance(marker, dict) else None
    known = file_sha256(info.name)
    if known:  # files srkd fetched one by one: check against the shipped hashes, not only the record
        expected, how = known, "srkd's shipped sha256 of every file"
    elif isinstance(recorded, dict) and all(isinstance(v, str) for v in recorded.values()):
        expected, how = {str(k): v for k, v in recorded.items()}, f"the install record ({(marker or {}).get('verified_by')})"
    else:
        n = sum(1 for p in (folder / registry.HR_DIR).iterdir() if is_image_file(p))
        what = "placed by hand" if not (folder / registry.MARKER).exists() else "install record damaged"
        return True, (f"{info.name}: {n} images, {what}; srkd ships no per-file hashes for it, so there is "
                      "nothing to verify against (re-download it to verify)")
    bad = [rel for rel, digest in sorted(expected.items())
           if not (folder / rel).is_file() or sha256_file(folder / rel) != digest]
    note = "" if marker is not None else " (no readable install record)"
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        return False, f"{info.name}: {len(bad)} of {len(expected)} files missing or changed: {shown}{note}"
    return True, f"{info.name}: OK ({len(expected)} files, checked against {how}){note}"
