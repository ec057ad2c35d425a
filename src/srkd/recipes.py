"""The recipes srkd ships: the YAML files of ``srkd/configs/`` in the installed package, found by name.

``srkd train edsr-x4-dukd`` has to work after ``pip install srkd``, where there is no repository and no
``configs/`` folder beside the user; so the recipes are package data and a name is looked up among them. A path
that exists always wins (``configs/edsr-x4-dukd.yaml`` in a checkout, or the user's own file), so a name never
shadows a file the user meant. In the repository, ``configs`` is a link to this folder (one copy, two spellings).
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path

from srkd.errors import ConfigError

SUFFIX = ".yaml"


def recipes_dir() -> Path:
    """The folder of the shipped recipes (a plain folder: srkd is installed unzipped, as pip does)."""
    return Path(str(resources.files("srkd") / "configs"))


def recipe_names() -> list[str]:
    """Every shipped recipe's name: its path under ``configs/`` without ``.yaml`` (``teachers/rcan-20-x4``)."""
    root = recipes_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}"))


def resolve_recipe(spec: str | os.PathLike[str]) -> Path:
    """A config file for ``spec``: an existing file as given, else the shipped recipe of that name (with or
    without ``.yaml``, with or without its ``configs/`` prefix; a teacher recipe also by its bare name when that
    is unique). An unknown name is one :class:`ConfigError` line naming the closest recipes."""
    text = os.fspath(spec).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a config file or a recipe name (srkd config list)")
    names = recipe_names()
    key = text.removesuffix(SUFFIX).replace("\\", "/")
    key = key.split("configs/", 1)[1] if "configs/" in key else key  # configs/x.yaml outside a checkout
    if key in names:
        return recipes_dir() / f"{key}{SUFFIX}"
    by_stem = [n for n in names if n.rsplit("/", 1)[-1] == key]
    if len(by_stem) == 1:
        return recipes_dir() / f"{by_stem[0]}{SUFFIX}"
    close = difflib.get_close_matches(key, names, n=5, cutoff=0.5) or by_stem
    hint = f"closest: {', '.join(close)}" if close else f"{len(names)} recipes: srkd config list"
    raise ConfigError(f"{text}: config file not found, nor a shipped recipe of that name ({hint})")


__all__ = ["recipe_names", "recipes_dir", "resolve_recipe"]
