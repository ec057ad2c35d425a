"""The one rule that keeps a run folder's results safe from the next run pointed at it.

A run folder holds results a user may have waited days for (``best.safetensors``, ``last.safetensors``, the
validation record in ``log.jsonl``) and the ``config.yaml`` that says what they are. A new run may write into
it only when it *continues* that run: it resumes from the folder's own training checkpoints. Anything else (a
fresh start after ``ckpt/`` was deleted, ``--resume none``, ``--resume PATH`` with another run's checkpoint)
would replace those files with the ones of a different run, so it is refused with one line naming the folder
and the way out: another ``--out``, or ``--overwrite``, which discards the folder's srkd files first.

The folder itself is checked first (not a file, not under one, a name the filesystem takes, writable), so a bad
``--out`` is one line before anything is built rather than an OSError at the first checkpoint.

A folder where nothing was learned yet (no weights, no train/val record past iteration 0) whose ``config.yaml``
is the one this run would write is the same run restarted after an early crash: it is not refused.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from srkd.engine import state as ckpt
from srkd.errors import ConfigError

WEIGHTS = ("best.safetensors", "last.safetensors")
RESULTS = (*WEIGHTS, "log.jsonl", "config.yaml")


def resolved_yaml(cfg: Any) -> str:
    """The ``config.yaml`` text a run of ``cfg`` writes (one function, so the guard compares like with like)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _made_progress(log: Path) -> bool:
    """True when ``log`` records a training or validation step past iteration 0 (or cannot be read: then it is
    treated as holding results, the safe side)."""
    if not log.exists():
        return False
    try:
        with open(log, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and rec.get("type") != "start":
                    return True
    except (OSError, UnicodeDecodeError):
        return True
    return False


def holds_results(run_dir: Path, config_text: str) -> list[str]:
    """The result files of ``run_dir`` that a run of another config (``config_text``) would overwrite."""
    held = [name for name in WEIGHTS if (run_dir / name).exists()]
    if _made_progress(run_dir / "log.jsonl"):
        held.append("log.jsonl")
    cfg_file = run_dir / "config.yaml"
    if held:
        if cfg_file.exists():
            held.append("config.yaml")
        return held
    if cfg_file.exists():
        try:
            same = cfg_file.read_text(encoding="utf-8") == config_text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            held.append("config.yaml")
    return held


def _own_checkpoint(run_dir: Path, path: Path) -> bool:
    try:
        return path.resolve().parent == (run_dir / ckpt.CKPT_DIR).resolve()
    except OSError:
        return False


def guard(run_dir: Path, cfg: Any, resumed_from: Path | None, overwrite: bool) -> None:
    """Refuse (ConfigError) to start or fork a run in a folder holding another run's results, unless
    ``overwrite``. ``resumed_from``: the checkpoint this run continues, None for a fresh start. Reads only."""
    if overwrite or not run_dir.is_dir():
        return
    if resumed_from is not None and _own_checkpoint(run_dir, resumed_from):
        return  # continuing the folder's own run: its results are this run's to update
    held = holds_results(run_dir, resolved_yaml(cfg))
    if not held:
        return
    how = "starting afresh" if resumed_from is None else f"continuing {resumed_from}"
    raise ConfigError(
        f"{run_dir} holds the results of a run ({', '.join(held)}) that {how} would overwrite; "
        "choose another --out, or pass --overwrite to discard them"
    )


def check_folder(run_dir: Path) -> None:
    """A run folder path srkd can create and write: not a file, not under a file, a name the filesystem takes,
    writable. One ConfigError line, before anything is built, instead of an OSError at the first checkpoint."""
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: exists and is a file, not a run folder; choose another --out")
        existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("."))
        if not existing.is_dir():
            raise ConfigError(f"{run_dir}: {existing} is a file, so the run folder cannot be made there; "
                              "choose another --out")
        for part in run_dir.parts:
            if len(part.encode("utf-8", "surrogateescape")) > 255:
                raise ConfigError(f"{str(run_dir)[:80]}...: a folder name longer than 255 bytes; choose a shorter "
                                  "--out or name")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{run_dir}: {existing} is not writable; choose another --out")
    except OSError as exc:
        raise ConfigError(f"{str(run_dir)[:200]}: not usable as a run folder ({exc.strerror or exc}); "
                          "choose another --out") from None


def starting_point(run_dir: Path, cfg: Any, resume: str | None, overwrite: bool,
                   report: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a run continues from (``resume``: "auto", a path, or None for a fresh start), after
    checking that the folder is usable and that the run cannot overwrite another run's results."""
    check_folder(run_dir)
    resumed: tuple[Path, dict[str, Any]] | None = None
    if resume == "auto":
        resumed = None if overwrite else ckpt.find_latest(run_dir, report)
    elif resume is not None:
        resumed = (Path(resume), ckpt.load_checkpoint(resume))
    elif ckpt.list_checkpoints(run_dir) and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds training checkpoints; continue with --resume auto, choose another --out, "
            "or pass --overwrite to discard them"
        )
    guard(run_dir, cfg, resumed[0] if resumed else None, overwrite)
    return resumed


def clear(run_dir: Path) -> None:
    """``--overwrite``: delete the srkd files of ``run_dir`` (results, training checkpoints, TensorBoard
    events), nothing else, so the new run's folder holds only the new run."""
    for name in RESULTS:
        (run_dir / name).unlink(missing_ok=True)
    for _step, path in ckpt.list_checkpoints(run_dir):
        path.unlink(missing_ok=True)
    tb = run_dir / "tb"
    if tb.is_dir() and all(p.name.startswith("events.out.tfevents") for p in tb.rglob("*") if p.is_file()):
        shutil.rmtree(tb, ignore_errors=True)


__all__ = ["RESULTS", "check_folder", "clear", "guard", "holds_results", "resolved_yaml", "starting_point"]
