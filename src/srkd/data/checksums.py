"""Per-file sha256 of the datasets srkd fetches file by file from pinned commits of public repositories.

The hashes live in ``checksums.json`` beside this module, shipped as package data (``pyproject.toml``), so
tools other than Python can read them and ``srkd data verify`` can check a dataset whose install record is gone.
Each dataset maps its install paths (the layout under ``<data root>/<name>/``) to sha256; they were computed from
copies of exactly these files (the public sources named in :mod:`srkd.data.registry`, at the pinned commits)
with ``sha256sum``; a download is accepted only when every file matches.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from srkd.errors import DataError


@functools.cache
def _shipped() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(resources.files("srkd.data").joinpath("checksums.json").read_text(encoding="utf-8"))
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"srkd's shipped dataset checksums are missing or damaged ({exc}); reinstall srkd") from None
    return {str(name): {str(p): str(d) for p, d in sums.items()} for name, sums in files.items()}


def file_sha256(name: str) -> dict[str, str]:
    """Install path -> sha256 for dataset ``name``; empty when srkd has no per-file hashes for it."""
    return dict(_shipped().get(name, {}))


__all__ = ["file_sha256"]
