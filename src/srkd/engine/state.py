"""Training checkpoints that survive ``kill -9`` and resume bit for bit.

A training checkpoint (``run_dir/ckpt/iter_XXXXXXXX.pt``) holds everything the next iteration depends on: the
student, its EMA, optimiser and grad-scaler states, the lr schedule's settings, the iteration, the method's own state (e.g. a
generator and its optimiser) and every random number generator of every rank. The data sampler needs no
state: its batch is a pure function of (seed, step, rank). Restoring all of it makes a resumed CPU run produce
the same weights, to the last bit, as one that was never interrupted.

Writes are atomic (:mod:`srkd.io`): the bytes are serialised in memory, written to a temporary file in the same
folder, fsync'ed, renamed over the final name (``os.replace``) and the folder fsync'ed. A kill at any moment leaves
either the old set of checkpoints or the old set plus the new one, never a partial file under a final name.
Old checkpoints are deleted only after the new one is durable. Files are read with ``weights_only=True``, so a
checkpoint cannot run code: RNG states are stored as tensors and lists, never as pickled numpy objects.
"""

from __future__ import annotations

import io
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from srkd.errors import CheckpointError, TrainingError
from srkd.io import atomic_write_bytes

FORMAT = "srkd-train-state"
# 2: the lr schedule is recorded as ``schedule`` (lr, milestones, step_size, gamma), no torch scheduler state (the
# engine's lr is a function of the iteration). Format 1 checkpoints (a ``scheduler`` state) still resume.
FORMAT_VERSION = 2
CKPT_DIR = "ckpt"
_NAME = re.compile(r"^iter_(\d{8,})\.pt$")


# -- random number generators ----------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Python, numpy (legacy global), torch CPU and CUDA generator states, as weights_only-loadable values."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- files -----------------------------------------------------------------------------------------------
def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"iter_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the training checkpoints in ``run_dir``, oldest first (temp files ignored)."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m and path.is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically; a full disk or read-only folder is a TrainingError and leaves no trace."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, buf)
    try:
        atomic_write_bytes(path, buf.getbuffer())
    except OSError as exc:
        raise TrainingError(
            f"{path}: cannot write the training checkpoint ({exc.strerror or exc}); "
            "earlier checkpoints are kept, free space or fix permissions and resume with --resume auto"
        ) from None
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (no code execution); a CheckpointError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such training checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad CRC, refused global...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or not a training checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an srkd training checkpoint (srkd model files go to --init/teacher)"
        )
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer srkd (format {state['format_version']}); upgrade srkd"
        )
    return state


def find_latest(
    run_dir: str | Path, report: Callable[[str], None] | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """Newest readable checkpoint of ``run_dir``; damaged ones are skipped (never deleted) and each skip is
    reported as one line through ``report`` (default: ``warning: ...`` on stderr)."""
    for _step, path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            (report or _warn_line)(f"skipping unreadable checkpoint: {exc}")
    return None


def _warn_line(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def prune(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and temp files left by a killed writer."""
    for _step, path in list_checkpoints(run_dir)[:-keep]:
        path.unlink(missing_ok=True)
    folder = Path(run_dir) / CKPT_DIR
    for tmp in folder.glob(".iter_*.tmp"):
        tmp.unlink(missing_ok=True)


__all__ = [
    "atomic_write_bytes",
    "capture_rng",
    "checkpoint_path",
    "find_latest",
    "list_checkpoints",
    "load_checkpoint",
    "prune",
    "restore_rng",
    "save_checkpoint",
    "seed_everything",
]
