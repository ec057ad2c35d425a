"""srkd: knowledge distillation for super-resolution networks, with data or without any.

The top-level namespace stays light (no torch import) so that ``import srkd`` and ``srkd --help`` answer
instantly: :func:`distill` and :class:`Result` are loaded from :mod:`srkd.api` on first use. The building blocks
live in the sub-packages::

    from srkd.models import build_model
    from srkd.ops.imresize import imresize
    from srkd.metrics import calculate_psnr_y, calculate_ssim_y
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from srkd.errors import SrkdError  # noqa: E402

if TYPE_CHECKING:
    from srkd.api import Result, distill

_LAZY = {"Result": "srkd.api"}


def __getattr__(name: str) -> Any:
    """``srkd.distill`` / ``srkd.Result`` import torch and the engine, so they load when first asked for.
    ``srkd.distill`` is the methods' package, which is callable as :func:`srkd.api.distill` (its docstring says
    why the two share the name)."""
    if name == "distill":
        return importlib.import_module("srkd.distill")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'srkd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, "distill"])


__all__ = ["Result", "SrkdError", "__version__", "distill"]
