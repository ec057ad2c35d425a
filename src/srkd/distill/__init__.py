"""Distillation methods: an explicit table from the name used in configs to the module that implements it.

Each module exposes ``Config`` (a :class:`~srkd.distill.base.MethodConfig` subclass whose ``name`` is a
``Literal``) and ``Method`` (a :class:`~srkd.distill.base.Method` subclass). Modules are imported on first use
so that a config naming ``kd`` never pays for importing CSD's VGG or the data-free generator.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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


__all__ = ["METHODS", "get_method"]
