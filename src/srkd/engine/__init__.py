"""The training engine shared by every method: config, loop, checkpoints, DDP, logging.

``train(cfg)`` is the whole API for most uses; see :mod:`srkd.engine.trainer` for the loop itself.
"""

from __future__ import annotations

from srkd.engine.config import TrainConfig
from srkd.engine.trainer import train

__all__ = ["TrainConfig", "train"]
