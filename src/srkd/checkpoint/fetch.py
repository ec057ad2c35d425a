"""``srkd teachers download``: fetch a zoo checkpoint, check its sha256, convert it, cache the srkd model.

The raw file is downloaded with :func:`srkd.data.download.download` (https only, resumable, checksum checked
before the file appears under its name) into ``<data root>/zoo/raw/``; a file whose sha256 differs is deleted
and nothing is cached. ``source`` replaces the pinned URL with a mirror or a local copy (a path or ``file://``),
for machines without internet access or users who already hold the file; the same sha256 check applies.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

from srkd.checkpoint.convert import convert
from srkd.checkpoint.zoo import ZooEntry, cache_dir, cached_path, get
from srkd.data.download import download, sha256_file
from srkd.errors import CheckpointError, DataError


def _local_source(source: str) -> Path | None:
    """The local file a ``source`` names (plain path or ``file://`` URL); None for a network URL."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme in ("http", "https"):
        return None
    return Path(source)


def _raw_file(entry: ZooEntry, source: str | None, root: Any, progress: bool, loopback_ok: bool) -> Path:
    local = _local_source(source) if source else None
    if local is None:
        dest = cache_dir(root) / "raw" / entry.filename
        download(source or entry.url, dest, entry.sha256, progress, _allow_insecure_for_tests=loopback_ok)
        return dest
    if not local.is_file():
        raise DataError(f"{local}: no such file (the local copy of zoo:{entry.name})")
    got = sha256_file(local)
    if got != entry.sha256:
        raise DataError(
            f"{local}: checksum mismatch for zoo:{entry.name} (expected sha256 {entry.sha256}, got {got}); "
            "nothing was cached"
        )
    return local


def _provenance(entry: ZooEntry) -> dict[str, Any]:
    return {"zoo_name": entry.name, "source_url": entry.url, "licence": entry.licence}


def fetch(
    name: str,
    *,
    source: str | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: bool = True,
    force: bool = False,
    _allow_insecure_for_tests: bool = False,
) -> Path:
    """The cached srkd checkpoint of zoo model ``name``, downloading and converting it first if needed."""
    entry = get(name)
    dest = cached_path(entry.name, root)
    if dest.is_file() and not force:
        return dest
    raw = _raw_file(entry, source, root, progress, _allow_insecure_for_tests)
    scale = entry.scales[0] if len(entry.scales) == 1 else None
    try:
        convert(raw, dest, arch=entry.arch, scale=scale, meta=_provenance(entry))
    except CheckpointError as exc:
        raise CheckpointError(f"zoo:{entry.name}: the verified file does not convert ({exc})") from None
    return dest


__all__ = ["fetch"]
