"""Build, cache and load srkd's optional C++ kernels (today: the CPU ``imresize`` passes).

Why not a compiled wheel or a torch C++ extension: srkd installs as pure Python, and ``torch.utils.cpp_extension``
needs ninja and compiles against torch's headers. ``imresize_native.cpp`` includes only the C++ standard library,
so the system C++ compiler builds it in about a second, the first time it is needed, for *this* CPU
(``-O3 -march=native``). The library is cached under ``$XDG_CACHE_HOME/srkd/native`` (default ``~/.cache``),
named by a hash of the source, the compiler, the flags and the CPU, so a changed file, compiler or machine (a home
directory shared between hosts) gets its own build. It is written to a temporary name and renamed into place, so
concurrent processes (DDP ranks, data workers) never load a half-written file.

Everything is optional: without a compiler, with ``SRKD_NATIVE=0``, or if the build or load fails, ``library()``
returns ``None``, ``status()`` says why, and callers use their torch path (same results, slower).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

from srkd.io import replacing

__all__ = ["library", "status", "cache_dir", "compiler"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("imresize_native.cpp")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-std=c++17", "-shared", "-fPIC", "-pthread")
_PTR, _I64 = ctypes.c_void_p, ctypes.c_int64
_TABLE = [_PTR, _PTR, _I64]  # indices, weights, taps per output pixel
_ARGTYPES = {
    "srkd_resize_rows": [_PTR, _PTR, _I64, _I64, _I64, _I64, *_TABLE, ctypes.c_int],
    "srkd_resize_cols": [_PTR, _PTR, _I64, _I64, _I64, _I64, *_TABLE, ctypes.c_int],
    "srkd_resize_rows_cols": [_PTR, _PTR, _I64, _I64, _I64, _I64, _I64, *_TABLE, *_TABLE, ctypes.c_int],
}
_status = "not loaded yet"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "srkd" / "native"


def status() -> str:
    """Why the native kernels are, or are not, in use: for benchmarks and bug reports."""
    library()
    return _status


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags: ``-march=native`` code is only valid where they match."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return platform.machine() + "\n".join(dict.fromkeys(keep))  # one copy per distinct line, not one per core


def compiler() -> str:
    """The C++ compiler srkd builds with: ``$CXX``, else ``c++``."""
    return os.environ.get("CXX") or "c++"


def _build(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), _cpu_signature()]).encode())
    target = cache_dir() / f"libsrkd_imresize-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    with replacing(target, mode=0o777) as tmp:  # what the compiler itself would give its output
        done = subprocess.run([cxx, *FLAGS, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{cxx} failed: {done.stderr.strip()[-500:]}")
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first use; ``None`` (and ``status()`` says why) when unavailable."""
    global _status
    if os.environ.get("SRKD_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _status = "off (SRKD_NATIVE=0)"
        return None
    cxx = compiler()
    if shutil.which(cxx) is None:
        _status = f"unavailable: no C++ compiler ({cxx!r} not found; set CXX or install g++)"
        log.info("srkd: native imresize %s; using the torch path", _status)
        return None
    try:
        path = _build(cxx)
        lib = ctypes.CDLL(str(path))
        for name, argtypes in _ARGTYPES.items():
            getattr(lib, name).argtypes = argtypes
            getattr(lib, name).restype = ctypes.c_int  # 0, or 1 when a scratch buffer could not be allocated
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _status = f"unavailable: {exc}"
        log.warning("srkd: native imresize %s; using the torch path (same results, slower)", _status)
        return None
    _status = f"native C++ ({cxx} {' '.join(FLAGS[:2])}, {path})"
    return lib
