"""Distillation methods: an explicit table from the name used in configs to the module that implements it.

Each module exposes ``Config`` (a :class:`~srkd.distill.base.MethodConfig` subclass whose ``name`` is a
``Literal``) and ``Method`` (a :class:`~srkd.distill.base.Method` subclass). Modules are imported on first use
so that a config naming ``kd`` never pays for importing CSD's VGG or the data-free generator.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

from srkd.errors import ConfigError

# name -> module. Adding a method = one module + one line here.
METHODS: dict[str, str] = {
    "scratch": "srkd.distill.scratch",
    "kd": "srkd.distill.kd",
    "fakd": "srkd.distill.fakd",
    "csd": "srkd.distill.csd",
    "dukd": "srkd.distill.dukd",
    "datafree": "srkd.distill.datafree",
}


def get_method(name: str) -> ModuleType:
    """The module implementing method ``name`` (with ``Config`` and ``Method``); ConfigError if unknown."""
    if not isinstance(name, str) or name.lower() not in METHODS:
        raise ConfigError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return importlib.import_module(METHODS[name.lower()])


class _CallablePackage(ModuleType):
    """``srkd.distill`` names both this package and the Python API's entry point ``srkd.distill(teacher, student,
    ...)`` (:func:`srkd.api.distill`). Python binds the attribute ``srkd.distill`` to this package as soon as any
    method module is imported (``import srkd.distill.kd``), whatever ``srkd.__init__`` provides, so the package
    itself answers the call; ``srkd.distill.kd`` and ``srkd.distill(...)`` both work, in any import order."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from srkd.api import distill  # inside: srkd.api imports the engine, which imports this package

        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage

__all__ = ["METHODS", "get_method"]
