"""Stopping a run cleanly: SIGINT/SIGTERM finish the current iteration and save a training checkpoint."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a training checkpoint (the CLI exits with status 130)."""


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (a batch scheduler, ``kill``, torchrun passing on its own signal) ask the loop
    to stop after the current iteration and save a checkpoint, instead of killing the process mid-iteration and
    losing the progress made since the last checkpoint.

    A second Ctrl-C aborts at once, unless it comes within a second of the first: under torchrun a Ctrl-C
    reaches each worker twice (from the terminal and forwarded by the launcher). SIGKILL is never caught.
    Handlers are installed only in the main thread (Python's rule) and restored on exit.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.received is not None:
            if signum == signal.SIGINT and now - self._when > 1.0:
                raise KeyboardInterrupt
            return
        self.received, self._when = signal.Signals(signum).name, now
        if os.environ.get("RANK", "0") == "0":
            print(
                f"\n{self.received}: stopping after this iteration and saving a checkpoint "
                "(Ctrl-C again to abort without saving)",
                file=sys.stderr,
                flush=True,
            )


__all__ = ["Interrupted", "StopSignals"]
