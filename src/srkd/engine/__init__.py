"""The training engine shared by every method: config, loop, checkpoints, DDP, logging.

``train(cfg)`` is the whole API for most uses. :mod:`srkd.engine.trainer` holds the loop (``setup_run`` -> ``Run``,
``run_loop``), :mod:`srkd.engine.build` the pieces it builds, :mod:`srkd.engine.optim` the optimiser, the lr schedule
and the one training step, :mod:`srkd.engine.state` the checkpoints.
"""

from __future__ import annotations

from srkd.engine.config import TrainConfig
from srkd.engine.trainer import train

__all__ = ["TrainConfig", "train"]
