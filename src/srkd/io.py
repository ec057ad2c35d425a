"""Every file srkd writes goes through one atomic-replace helper, so every file gets the same guarantees.

A model, config, image, results JSON or training checkpoint is first written to a temporary twin in the same
folder, fsync'ed, given the permissions a plain ``open()`` would have given it (``0o666`` less the user's
umask: ``tempfile.mkstemp`` creates ``0o600`` files, which is how every srkd output used to end up private),
then renamed over the final name (``os.replace``, atomic on POSIX) and the folder fsync'ed. A kill at any
moment leaves the old file or the new one, never a partial file under the final name, and a failure removes
the twin. The twin's name is cut so that it fits the filesystem's name limit whenever the final name does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from srkd.errors import SrkdError

_UMASK_LOCK = threading.Lock()
_TWIN_STEM = 80  # characters of the final name kept in its twin's: ".<stem>.<8 random>.tmp" stays under 255


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``); elsewhere it is set
    and restored under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                m = re.match(r"Umask:\s*([0-7]+)", line)
                if m:
                    return int(m.group(1), 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_mode(base: int = 0o666) -> int:
    """The mode ``open()`` (``base`` 0o666) or ``mkdir`` (0o777) would give a new file or folder."""
    return base & ~current_umask()


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable; filesystems that refuse fsync on folders are fine (it stays atomic)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: str | Path, mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary twin of ``path`` to write (by any means: a file object, a library, a compiler); on a
    clean exit fsync it, give it ``mode`` less the umask and rename it over ``path``. OSError on failure, and
    the twin is gone whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:_TWIN_STEM]}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, default_mode(mode))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, payload: Any) -> Path:
    """Results JSON (indented, one trailing newline), atomically; a failure is one SrkdError line."""
    text = json.dumps(payload, indent=2) + "\n"
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise SrkdError(f"{path}: cannot write JSON ({exc.strerror or exc})") from None


__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "default_mode",
    "fsync_dir",
    "replacing",
    "write_json",
]
