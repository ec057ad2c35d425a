"""What a run tells its user: a progress line, a JSONL log for reports, TensorBoard for curves and samples.

``run_dir/log.jsonl`` holds one JSON object per line: ``{"type": "start", ...}`` when a run (or resume)
begins, ``{"type": "train", "step", "lr", "loss", <terms>, "it_s", "skipped", "grad_norm", "grad_norm_max", "time"}``
every ``log_every`` iterations (the student's gradient norm before clipping, mean and max of the window) and ``{"type": "val", "step", "set", "psnr_y", "ssim_y", "n"}`` after each validation (with EMA on, of the averaged
weights, and ``raw_psnr_y``/``raw_ssim_y`` of the trained ones beside them). A method's images (the data-free
sample grid) go to ``run_dir/<name>/iter_XXXXXXXX.png`` and TensorBoard. On resume the
records past the resumed iteration (written by the killed run after its last checkpoint) are dropped, so the
log reads as if the run had never stopped. Only rank 0 logs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from srkd.data.images import write_image
from srkd.errors import DataError, TrainingError
from srkd.io import atomic_write_bytes


class RunLogger:
    def __init__(
        self,
        run_dir: Path,
        total: int,
        start: int,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool | None = None,
        redo_val: bool = False,
    ) -> None:
        """``redo_val``: the resumed run validates iteration ``start`` again, so that iteration's validation
        records (of the killed run, possibly cut short) are dropped instead of doubled."""
        self.enabled = enabled
        self.total = total
        self.path = run_dir / "log.jsonl"
        self._bar = None
        self._tb = None
        self._broken = False
        if not enabled:
            return
        try:
            _truncate_jsonl(self.path, start, redo_val)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the whole run)
        except OSError as exc:
            raise _log_error(self.path, exc) from None
        self.console = Console(stderr=True)
        if progress is None:
            progress = self.console.is_terminal
        if progress:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[terms]}"),
                console=self.console,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, speed="", terms="")
            self._bar.start()
        if tensorboard:
            try:
                from torch.utils.tensorboard import (
                    SummaryWriter,  # inside: optional dependency (tensorboard extra)
                )
            except ImportError:  # optional dependency
                pass
            else:
                self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    # -- records ---------------------------------------------------------------------------------------
    def record(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            self._fh.write(json.dumps({**rec, "time": round(time.time(), 3)}, default=float) + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk: one line, and close() must not raise the same error again
            self._broken = True
            raise _log_error(self.path, exc) from None

    def info(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True)

    def advance(self, step: int) -> None:
        """Called after every iteration (cheap): moves the bar."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step)

    def train(
        self,
        step: int,
        lr: float,
        terms: dict[str, float],
        it_s: float,
        skipped: int,
        grad_norm: tuple[float, float] | None = None,
    ) -> None:
        """``grad_norm``: mean and max of the window's gradient norms (None when every step was skipped)."""
        if not self.enabled:
            return
        grads = {} if grad_norm is None else {"grad_norm": grad_norm[0], "grad_norm_max": grad_norm[1]}
        self.record(
            {"type": "train", "step": step, "lr": lr, **terms, "it_s": round(it_s, 4), "skipped": skipped, **grads}
        )
        text = " ".join(f"{k} {v:.4g}" for k, v in terms.items())
        if grad_norm is not None:
            text += f"  |g| {grad_norm[0]:.3g} (max {grad_norm[1]:.3g})"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, speed=f"{it_s:.2f} it/s", terms=text)
        else:
            eta = (self.total - step) / it_s if it_s > 0 else float("nan")
            self.info(f"iter {step}/{self.total}  {text}  lr {lr:.3g}  {it_s:.2f} it/s  ETA {_hms(eta)}")
        if self._tb is not None:
            for k, v in terms.items():
                self._tb.add_scalar(f"train/{k}", v, step)
            self._tb.add_scalar("train/lr", lr, step)
            self._tb.add_scalar("train/it_s", it_s, step)
            for k, v in grads.items():
                self._tb.add_scalar(f"train/{k}", v, step)

    def val(
        self, step: int, results: dict[str, dict[str, Any]], raw: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """``results`` of the validated network (the EMA copy when EMA is on); ``raw``, of the trained weights."""
        if not self.enabled:
            return
        parts = []
        for name, r in results.items():
            rec = {"type": "val", "step": step, "set": name, "psnr_y": r["psnr_y"], "ssim_y": r["ssim_y"], "n": r["n"]}
            text = f"{name} {r['psnr_y']:.3f} dB / {r['ssim_y']:.4f}"
            if raw is not None and name in raw:
                rec.update(raw_psnr_y=raw[name]["psnr_y"], raw_ssim_y=raw[name]["ssim_y"])
                text += f" (raw weights {raw[name]['psnr_y']:.3f} dB)"
            self.record(rec)
            parts.append(text)
            if self._tb is not None:
                self._tb.add_scalar(f"val/{name}/psnr_y", r["psnr_y"], step)
                self._tb.add_scalar(f"val/{name}/ssim_y", r["ssim_y"], step)
                if "raw_psnr_y" in rec:
                    self._tb.add_scalar(f"val/{name}/raw_psnr_y", rec["raw_psnr_y"], step)
        self.info(f"val @ {step}: " + ", ".join(parts))

    def samples(self, step: int, images: dict[str, torch.Tensor]) -> None:
        """A method's images after iteration ``step`` (name -> (C, H, W) float in [0, 1]): each to
        ``run_dir/<name>/iter_XXXXXXXX.png``, where reports find them, and to TensorBoard as ``samples/<name>``."""
        if not self.enabled:
            return
        for name, img in images.items():
            write_image(self.path.parent / name / f"iter_{step:08d}.png", img.detach().cpu())
            self.image(step, f"samples/{name}", img)

    def image(self, step: int, tag: str, img: torch.Tensor) -> None:
        """A (C, H, W) float image in [0, 1] to TensorBoard (e.g. SR | HR of a training patch)."""
        if self._tb is not None:
            self._tb.add_image(tag, img.detach().float().clamp(0, 1).cpu(), step)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        try:
            self._fh.close()
        except OSError:
            if not self._broken:  # already reported by record()
                raise


def _log_error(path: Path, exc: OSError) -> TrainingError:
    return TrainingError(f"{path}: cannot write the run log ({exc.strerror or exc}); the last training checkpoint "
                         "is kept: free space or fix permissions, then continue with --resume auto")


def _hms(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _truncate_jsonl(path: Path, start: int, redo_val: bool = False) -> None:
    """Drop records of iterations after ``start`` (a resumed run redoes them), and the validation records of
    ``start`` itself when ``redo_val``; atomic like every write."""
    if not path.exists():
        return
    kept = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            step = int(rec.get("step", 0))
            if step < start or (step == start and not (redo_val and rec.get("type") == "val")):
                kept.append(json.dumps(rec) + "\n")
    atomic_write_bytes(path, "".join(kept).encode("utf-8"))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` (for reports and tests).

    A run killed while writing leaves its last line cut short: that line is skipped, so a report can read the
    log of a run that is still going or was killed. A damaged line anywhere else is a :class:`DataError`.
    """
    with open(path, encoding="utf-8") as fh:
        lines = [(i, line) for i, line in enumerate(fh, 1) if line.strip()]
    records = []
    for n, (i, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if n == len(lines) - 1:
                break  # the line being written when the run was killed
            raise DataError(f"{path}: line {i} is not valid JSON ({exc.msg})") from None
    return records


__all__ = ["RunLogger", "read_log"]
